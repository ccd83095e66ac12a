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
    X(void *, OPENSSL_sk_value, (const OPENSSL_STACK *s, int i), (s, i)) \
    TERN_OPENSSL_CA_FUNCTIONS(X)

// What the mesh CA (TernControl) and the X.509-SVID checks (TernTLS) use: keys, certificates, PEM, verification.
// All in libcrypto, found through libssl's handle (dlsym searches the libraries a handle depends on).
#define TERN_OPENSSL_CA_FUNCTIONS(X) \
    X(EVP_PKEY_CTX *, EVP_PKEY_CTX_new_from_name, (OSSL_LIB_CTX *ctx, const char *name, const char *propq), (ctx, name, propq)) \
    X(void, EVP_PKEY_CTX_free, (EVP_PKEY_CTX *ctx), (ctx)) \
    X(int, EVP_PKEY_keygen_init, (EVP_PKEY_CTX *ctx), (ctx)) \
    X(int, EVP_PKEY_CTX_set_group_name, (EVP_PKEY_CTX *ctx, const char *name), (ctx, name)) \
    X(int, EVP_PKEY_CTX_set_rsa_keygen_bits, (EVP_PKEY_CTX *ctx, int bits), (ctx, bits)) \
    X(int, EVP_PKEY_generate, (EVP_PKEY_CTX *ctx, EVP_PKEY **pkey), (ctx, pkey)) \
    X(void, EVP_PKEY_free, (EVP_PKEY *pkey), (pkey)) \
    X(int, EVP_PKEY_get_base_id, (const EVP_PKEY *pkey), (pkey)) \
    X(int, EVP_PKEY_get_bits, (const EVP_PKEY *pkey), (pkey)) \
    X(int, EVP_PKEY_get_group_name, (const EVP_PKEY *pkey, char *name, size_t size, size_t *len), (pkey, name, size, len)) \
    X(const EVP_MD *, EVP_sha256, (void), ()) \
    X(X509 *, X509_new, (void), ()) \
    X(void, X509_free, (X509 *x), (x)) \
    X(int, X509_up_ref, (X509 *x), (x)) \
    X(int, X509_set_version, (X509 *x, long version), (x, version)) \
    X(ASN1_INTEGER *, X509_get_serialNumber, (X509 *x), (x)) \
    X(ASN1_TIME *, X509_getm_notBefore, (const X509 *x), (x)) \
    X(ASN1_TIME *, X509_getm_notAfter, (const X509 *x), (x)) \
    X(const ASN1_TIME *, X509_get0_notBefore, (const X509 *x), (x)) \
    X(X509_NAME *, X509_get_subject_name, (const X509 *x), (x)) \
    X(X509_NAME *, X509_get_issuer_name, (const X509 *x), (x)) \
    X(int, X509_set_issuer_name, (X509 *x, const X509_NAME *name), (x, name)) \
    X(int, X509_NAME_add_entry_by_txt, (X509_NAME *name, const char *field, int type, const unsigned char *bytes, int len, int loc, int set), (name, field, type, bytes, len, loc, set)) \
    X(int, X509_NAME_entry_count, (const X509_NAME *name), (name)) \
    X(int, X509_NAME_get_index_by_NID, (const X509_NAME *name, int nid, int lastpos), (name, nid, lastpos)) \
    X(X509_NAME_ENTRY *, X509_NAME_get_entry, (const X509_NAME *name, int loc), (name, loc)) \
    X(ASN1_STRING *, X509_NAME_ENTRY_get_data, (const X509_NAME_ENTRY *ne), (ne)) \
    X(int, X509_NAME_print_ex, (BIO *out, const X509_NAME *nm, int indent, unsigned long flags), (out, nm, indent, flags)) \
    X(int, X509_set_pubkey, (X509 *x, EVP_PKEY *pkey), (x, pkey)) \
    X(EVP_PKEY *, X509_get0_pubkey, (const X509 *x), (x)) \
    X(int, X509_check_private_key, (const X509 *x, const EVP_PKEY *pkey), (x, pkey)) \
    X(void, X509V3_set_ctx, (X509V3_CTX *ctx, X509 *issuer, X509 *subject, X509_REQ *req, X509_CRL *crl, int flags), (ctx, issuer, subject, req, crl, flags)) \
    X(X509_EXTENSION *, X509V3_EXT_conf_nid, (LHASH_OF(CONF_VALUE) *conf, X509V3_CTX *ctx, int ext_nid, const char *value), (conf, ctx, ext_nid, value)) \
    X(int, X509_add_ext, (X509 *x, X509_EXTENSION *ex, int loc), (x, ex, loc)) \
    X(void, X509_EXTENSION_free, (X509_EXTENSION *ex), (ex)) \
    X(int, X509_add1_ext_i2d, (X509 *x, int nid, void *value, int crit, unsigned long flags), (x, nid, value, crit, flags)) \
    X(int, X509_sign, (X509 *x, EVP_PKEY *pkey, const EVP_MD *md), (x, pkey, md)) \
    X(uint32_t, X509_get_extension_flags, (X509 *x), (x)) \
    X(uint32_t, X509_get_key_usage, (X509 *x), (x)) \
    X(uint32_t, X509_get_extended_key_usage, (X509 *x), (x)) \
    X(int, X509_digest, (const X509 *data, const EVP_MD *type, unsigned char *md, unsigned int *len), (data, type, md, len)) \
    X(GENERAL_NAME *, GENERAL_NAME_new, (void), ()) \
    X(void, GENERAL_NAME_free, (GENERAL_NAME *a), (a)) \
    X(void, GENERAL_NAME_set0_value, (GENERAL_NAME *a, int type, void *value), (a, type, value)) \
    X(ASN1_IA5STRING *, ASN1_IA5STRING_new, (void), ()) \
    X(int, ASN1_STRING_set, (ASN1_STRING *str, const void *data, int len), (str, data, len)) \
    X(void, ASN1_STRING_free, (ASN1_STRING *a), (a)) \
    X(int, ASN1_TIME_print_ex, (BIO *bp, const ASN1_TIME *tm, unsigned long flags), (bp, tm, flags)) \
    X(ASN1_TIME *, ASN1_TIME_set, (ASN1_TIME *s, time_t t), (s, t)) \
    X(ASN1_INTEGER *, BN_to_ASN1_INTEGER, (const BIGNUM *bn, ASN1_INTEGER *ai), (bn, ai)) \
    X(BIGNUM *, ASN1_INTEGER_to_BN, (const ASN1_INTEGER *ai, BIGNUM *bn), (ai, bn)) \
    X(BIGNUM *, BN_new, (void), ()) \
    X(void, BN_free, (BIGNUM *a), (a)) \
    X(int, BN_rand, (BIGNUM *rnd, int bits, int top, int bottom), (rnd, bits, top, bottom)) \
    X(char *, BN_bn2hex, (const BIGNUM *a), (a)) \
    X(void, CRYPTO_free, (void *ptr, const char *file, int line), (ptr, file, line)) \
    X(OPENSSL_STACK *, OPENSSL_sk_new_null, (void), ()) \
    X(int, OPENSSL_sk_push, (OPENSSL_STACK *st, const void *data), (st, data)) \
    X(void, OPENSSL_sk_free, (OPENSSL_STACK *st), (st)) \
    X(const BIO_METHOD *, BIO_s_mem, (void), ()) \
    X(BIO *, BIO_new_mem_buf, (const void *buf, int len), (buf, len)) \
    X(int, BIO_free, (BIO *a), (a)) \
    X(long, BIO_ctrl, (BIO *bp, int cmd, long larg, void *parg), (bp, cmd, larg, parg)) \
    X(int, PEM_write_bio_X509, (BIO *bp, const X509 *x), (bp, x)) \
    X(int, PEM_write_bio_PrivateKey, (BIO *bp, const EVP_PKEY *x, const EVP_CIPHER *enc, const unsigned char *kstr, int klen, pem_password_cb *cb, void *u), (bp, x, enc, kstr, klen, cb, u)) \
    X(X509 *, PEM_read_bio_X509, (BIO *bp, X509 **x, pem_password_cb *cb, void *u), (bp, x, cb, u)) \
    X(EVP_PKEY *, PEM_read_bio_PrivateKey, (BIO *bp, EVP_PKEY **x, pem_password_cb *cb, void *u), (bp, x, cb, u)) \
    X(X509_STORE *, X509_STORE_new, (void), ()) \
    X(void, X509_STORE_free, (X509_STORE *v), (v)) \
    X(int, X509_STORE_add_cert, (X509_STORE *ctx, X509 *x), (ctx, x)) \
    X(X509_STORE_CTX *, X509_STORE_CTX_new, (void), ()) \
    X(void, X509_STORE_CTX_free, (X509_STORE_CTX *ctx), (ctx)) \
    X(int, X509_STORE_CTX_init, (X509_STORE_CTX *ctx, X509_STORE *store, X509 *x509, STACK_OF(X509) *chain), (ctx, store, x509, chain)) \
    X(void, X509_STORE_CTX_set_flags, (X509_STORE_CTX *ctx, unsigned long flags), (ctx, flags)) \
    X(int, X509_STORE_CTX_set_purpose, (X509_STORE_CTX *ctx, int purpose), (ctx, purpose)) \
    X(int, X509_verify_cert, (X509_STORE_CTX *ctx), (ctx)) \
    X(int, X509_STORE_CTX_get_error, (const X509_STORE_CTX *ctx), (ctx)) \
    X(int, X509_STORE_CTX_get_error_depth, (const X509_STORE_CTX *ctx), (ctx)) \
    X(STACK_OF(X509) *, X509_STORE_CTX_get1_chain, (const X509_STORE_CTX *ctx), (ctx))
