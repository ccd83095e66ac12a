// Every OpenSSL function Tern calls, as X(return type, name, (parameters), (arguments)): the shim resolves them
// from libssl.so.3 when TLS is first needed (tern_openssl_load) and defines tern_NAME wrappers over them, so a
// process without TLS never loads OpenSSL at all (linked, libssl and libcrypto cost an idle sidecar 1.7 MiB of
// resident memory before a single call: their relocations). Swift calls the tern_ names.
#define TERN_OPENSSL_FUNCTIONS(X) \
    X(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *meth), (meth)) \
    X(void, SSL_CTX_free, (SSL_CTX *ctx), (ctx)) \
    X(SSL *, SSL_new, (SSL_CTX *ctx), (ctx)) \
    X(void, SSL_free, (SSL *s), (s)) \
    X(void, SSL_set_bio, (SSL *s, BIO *rbio, BIO *wbio), (s, rbio, wbio)) \
    X(void, SSL_set_accept_state, (SSL *s), (s)) \
    X(void, SSL_set_connect_state, (SSL *s), (s)) \
    X(int, SSL_set1_host, (SSL *s, const char *hostname), (s, hostname)) \
    X(int, SSL_set_session, (SSL *to, SSL_SESSION *session), (to, session)) \
    X(int, SSL_session_reused, (const SSL *s), (s)) \
    X(int, SSL_read_ex, (SSL *s, void *buf, size_t num, size_t *readbytes), (s, buf, num, readbytes)) \
    X(int, SSL_write_ex, (SSL *s, const void *buf, size_t num, size_t *written), (s, buf, num, written)) \
    X(int, SSL_shutdown, (SSL *s), (s)) \
    X(int, SSL_do_handshake, (SSL *s), (s)) \
    X(int, SSL_get_error, (const SSL *s, int ret), (s, ret)) \
    X(int, SSL_has_pending, (const SSL *s), (s)) \
    X(const char *, SSL_get_version, (const SSL *s), (s)) \
    X(long, SSL_get_verify_result, (const SSL *s), (s)) \
    X(SSL_SESSION *, SSL_get_session, (const SSL *s), (s)) \
    X(const SSL_CIPHER *, SSL_get_current_cipher, (const SSL *s), (s)) \
    X(X509_VERIFY_PARAM *, SSL_get0_param, (SSL *s), (s)) \
    X(void, SSL_get0_alpn_selected, (const SSL *s, const unsigned char **data, unsigned int *len), (s, data, len)) \
    X(X509 *, SSL_get0_peer_certificate, (const SSL *s), (s)) \
    X(void, SSL_SESSION_free, (SSL_SESSION *s), (s)) \
    X(SSL_SESSION *, SSL_SESSION_dup, (const SSL_SESSION *s), (s)) \
    X(int, SSL_SESSION_is_resumable, (const SSL_SESSION *s), (s)) \
    X(int, SSL_CTX_load_verify_locations, (SSL_CTX *ctx, const char *file, const char *path), (ctx, file, path)) \
    X(void, SSL_CTX_set_verify, (SSL_CTX *ctx, int mode, SSL_verify_cb callback), (ctx, mode, callback)) \
    X(int, SSL_CTX_use_certificate_chain_file, (SSL_CTX *ctx, const char *file), (ctx, file)) \
    X(int, SSL_CTX_use_PrivateKey_file, (SSL_CTX *ctx, const char *file, int type), (ctx, file, type)) \
    X(int, SSL_CTX_set_session_id_context, (SSL_CTX *ctx, const unsigned char *sid, unsigned int len), (ctx, sid, len)) \
    X(int, SSL_CTX_set_num_tickets, (SSL_CTX *ctx, size_t n), (ctx, n)) \
    X(void, SSL_CTX_set_client_CA_list, (SSL_CTX *ctx, STACK_OF(X509_NAME) *names), (ctx, names)) \
    X(STACK_OF(X509_NAME) *, SSL_load_client_CA_file, (const char *file), (file)) \
    X(int, SSL_CTX_set_cipher_list, (SSL_CTX *ctx, const char *str), (ctx, str)) \
    X(int, SSL_CTX_set_alpn_protos, (SSL_CTX *ctx, const unsigned char *protos, unsigned int len), (ctx, protos, len)) \
    X(X509 *, SSL_CTX_get0_certificate, (const SSL_CTX *ctx), (ctx)) \
    X(int, SSL_CTX_check_private_key, (const SSL_CTX *ctx), (ctx)) \
    X(const char *, SSL_CIPHER_standard_name, (const SSL_CIPHER *c), (c)) \
    X(const SSL_METHOD *, TLS_server_method, (void), ()) \
    X(const SSL_METHOD *, TLS_client_method, (void), ()) \
    X(EVP_CIPHER *, EVP_CIPHER_fetch, (OSSL_LIB_CTX *ctx, const char *algorithm, const char *properties), (ctx, algorithm, properties)) \
    X(void, ERR_clear_error, (void), ()) \
    X(unsigned long, ERR_get_error, (void), ()) \
    X(unsigned long, ERR_peek_last_error, (void), ()) \
    X(void, ERR_error_string_n, (unsigned long e, char *buf, size_t len), (e, buf, len)) \
    X(const char *, X509_verify_cert_error_string, (long n), (n)) \
    X(const ASN1_TIME *, X509_get0_notAfter, (const X509 *x), (x)) \
    X(int, X509_VERIFY_PARAM_set1_ip_asc, (X509_VERIFY_PARAM *param, const char *ip), (param, ip)) \
    X(int, ASN1_TIME_to_tm, (const ASN1_TIME *s, struct tm *tm), (s, tm)) \
    X(const unsigned char *, ASN1_STRING_get0_data, (const ASN1_STRING *x), (x)) \
    X(int, ASN1_STRING_length, (const ASN1_STRING *x), (x)) \
    X(void *, BIO_get_data, (BIO *b), (b)) \
    X(void, BIO_set_data, (BIO *b, void *ptr), (b, ptr)) \
    X(void, BIO_set_init, (BIO *b, int init), (b, init)) \
    X(int, BIO_get_new_index, (void), ()) \
    X(BIO_METHOD *, BIO_meth_new, (int type, const char *name), (type, name)) \
    X(int, BIO_meth_set_create, (BIO_METHOD *m, int (*create)(BIO *)), (m, create)) \
    X(int, BIO_meth_set_ctrl, (BIO_METHOD *m, long (*ctrl)(BIO *, int, long, void *)), (m, ctrl)) \
    X(int, BIO_meth_set_read, (BIO_METHOD *m, int (*read)(BIO *, char *, int)), (m, read)) \
    X(int, BIO_meth_set_write, (BIO_METHOD *m, int (*write)(BIO *, const char *, int)), (m, write)) \
    X(BIO *, BIO_new, (const BIO_METHOD *type), (type)) \
    X(void, BIO_set_flags, (BIO *b, int flags), (b, flags)) \
    X(void, BIO_clear_flags, (BIO *b, int flags), (b, flags)) \
    X(int, EVP_CIPHER_get_iv_length, (const EVP_CIPHER *c), (c)) \
    X(int, EVP_DecryptInit_ex, (EVP_CIPHER_CTX *ctx, const EVP_CIPHER *c, ENGINE *e, const unsigned char *key, const unsigned char *iv), (ctx, c, e, key, iv)) \
    X(int, EVP_EncryptInit_ex, (EVP_CIPHER_CTX *ctx, const EVP_CIPHER *c, ENGINE *e, const unsigned char *key, const unsigned char *iv), (ctx, c, e, key, iv)) \
    X(int, EVP_MAC_CTX_set_params, (EVP_MAC_CTX *ctx, const OSSL_PARAM *params), (ctx, params)) \
    X(void, GENERAL_NAMES_free, (GENERAL_NAMES *a), (a)) \
    X(OSSL_PARAM, OSSL_PARAM_construct_end, (void), ()) \
    X(OSSL_PARAM, OSSL_PARAM_construct_octet_string, (const char *key, void *buf, size_t size), (key, buf, size)) \
    X(OSSL_PARAM, OSSL_PARAM_construct_utf8_string, (const char *key, char *buf, size_t size), (key, buf, size)) \
    X(int, RAND_bytes, (unsigned char *buf, int num), (buf, num)) \
    X(long, SSL_CTX_ctrl, (SSL_CTX *ctx, int cmd, long larg, void *parg), (ctx, cmd, larg, parg)) \
    X(long, SSL_ctrl, (SSL *s, int cmd, long larg, void *parg), (s, cmd, larg, parg)) \
    X(int, SSL_CTX_set_ex_data, (SSL_CTX *ctx, int idx, void *data), (ctx, idx, data)) \
    X(void *, SSL_CTX_get_ex_data, (const SSL_CTX *ctx, int idx), (ctx, idx)) \
    X(void, SSL_CTX_set_alpn_select_cb, (SSL_CTX *ctx, SSL_CTX_alpn_select_cb_func cb, void *arg), (ctx, cb, arg)) \
    X(int, SSL_CTX_set_tlsext_ticket_key_evp_cb, (SSL_CTX *ctx, int (*cb)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *, EVP_MAC_CTX *, int)), (ctx, cb)) \
    X(SSL_CTX *, SSL_get_SSL_CTX, (const SSL *s), (s)) \
    X(const char *, SSL_get_servername, (const SSL *s, const int type), (s, type)) \
    X(uint64_t, SSL_CTX_set_options, (SSL_CTX *ctx, uint64_t op), (ctx, op)) \
    X(void *, X509_get_ext_d2i, (const X509 *x, int nid, int *crit, int *idx), (x, nid, crit, idx)) \
    X(int, OPENSSL_sk_num, (const OPENSSL_STACK *s), (s)) \
    X(void *, OPENSSL_sk_value, (const OPENSSL_STACK *s, int i), (s, i))
