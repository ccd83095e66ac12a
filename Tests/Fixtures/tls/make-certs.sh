#!/usr/bin/env bash
# Makes the certificates the TLS tests use, in OUTDIR (openssl CLI; nothing is kept in the repository):
#   ca.crt/ca.key            a root CA (ECDSA P-256)
#   other-ca.crt             an unrelated root CA (for "wrong CA" cases)
#   server.crt/server.key    ECDSA P-256 leaf for localhost, a.example.com, *.b.example.com, 127.0.0.1, ::1,
#                            signed by ca (server-chain.crt: leaf then CA)
#   rsa.crt/rsa.key          RSA 2048 leaf for localhost, signed by ca
#   other.crt/other.key      leaf for localhost signed by other-ca
#   client.crt/client.key    client leaf with URI SAN spiffe://cluster.local/ns/default/sa/client, signed by ca
#   expired.crt/expired.key  leaf for localhost, valid 2020-01-01 to 2020-01-02, signed by ca
#   future.crt/future.key    leaf for localhost, valid from 2090, signed by ca
#   mismatch.key             a key that belongs to no certificate here
set -euo pipefail
out=${1:?usage: make-certs.sh OUTDIR}
mkdir -p "$out"
cd "$out"
ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

root() {  # name subject
    ec "$1.key"
    openssl req -x509 -new -key "$1.key" -days 3650 -subj "/CN=$2" -out "$1.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() {  # name ca san extendedKeyUsage [key-algorithm]
    if [ "${5:-ec}" = rsa ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1.key" 2>/dev/null
    else
        ec "$1.key"
    fi
    openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$3" "$4" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 825 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

dated() {  # name ca start end (YYYYMMDDHHMMSSZ): through `openssl ca`, the only way OpenSSL 3.0 sets both dates
    ec "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$1" -out "$1.csr" 2>/dev/null
    mkdir -p "ca-$1"
    : > "ca-$1/index.txt"
    echo 01 > "ca-$1/serial"
    cat > "ca-$1/openssl.cnf" <<CNF
[ca]
default_ca = d
[d]
dir = ca-$1
database = ca-$1/index.txt
serial = ca-$1/serial
new_certs_dir = ca-$1
default_md = sha256
policy = p
copy_extensions = none
x509_extensions = e
[p]
commonName = supplied
[e]
subjectAltName = DNS:localhost,IP:127.0.0.1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
CNF
    openssl ca -batch -config "ca-$1/openssl.cnf" -cert "$2.crt" -keyfile "$2.key" -in "$1.csr" \
        -startdate "$3" -enddate "$4" -out "$1.crt" -notext 2>/dev/null
    rm -rf "ca-$1" "$1.csr"
}

root ca "Tern Test Root"
root other-ca "Unrelated Root"
leaf server ca "DNS:localhost,DNS:a.example.com,DNS:*.b.example.com,IP:127.0.0.1,IP:::1" serverAuth
cat server.crt ca.crt > server-chain.crt
leaf rsa ca "DNS:localhost,IP:127.0.0.1" serverAuth rsa
leaf other other-ca "DNS:localhost,IP:127.0.0.1" serverAuth
leaf client ca "URI:spiffe://cluster.local/ns/default/sa/client" clientAuth
dated expired ca 20200101000000Z 20200102000000Z
dated future ca 20900101000000Z 20910101000000Z
ec mismatch.key
rm -f ./*.srl
