// TernProxy
