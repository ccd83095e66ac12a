#include "tern_openssl.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

// MARK: - OpenSSL, loaded when first needed

#define TERN_OPENSSL_POINTER(ret, name, params, args) static ret(*p_##name) params;
TERN_OPENSSL_FUNCTIONS(TERN_OPENSSL_POINTER)

#define TERN_OPENSSL_WRAPPER(ret, name, params, args) ret tern_##name params { return p_##name args; }
TERN_OPENSSL_FUNCTIONS(TERN_OPENSSL_WRAPPER)

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256];

static void load(void) {
    void *ssl = dlopen("libssl.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!ssl) {
        snprintf(load_error, sizeof load_error, "cannot load libssl.so.3 (OpenSSL 3): %s", dlerror());
        return;
    }
#define TERN_OPENSSL_RESOLVE(ret, name, params, args)                                                              \
    if (!load_error[0]) {                                                                                          \
        *(void **)&p_##name = dlsym(ssl, #name);                                                                   \
        if (!p_##name) snprintf(load_error, sizeof load_error, "OpenSSL lacks %s: not OpenSSL 3", #name);           \
    }
    TERN_OPENSSL_FUNCTIONS(TERN_OPENSSL_RESOLVE)
}

int tern_openssl_load(char *error, size_t capacity) {
    pthread_once(&load_once, load);
    if (load_error[0]) {
        if (capacity) snprintf(error, capacity, "%s", load_error);
        return 0;
    }
    return 1;
}

// The shim's own calls go through the resolved functions too (the macros of the headers expand to these names).
#define SSL_CTX_ctrl p_SSL_CTX_ctrl
#define SSL_ctrl p_SSL_ctrl
#define SSL_CTX_set_ex_data p_SSL_CTX_set_ex_data
#define SSL_CTX_get_ex_data p_SSL_CTX_get_ex_data
#define SSL_CTX_set_alpn_select_cb p_SSL_CTX_set_alpn_select_cb
#define SSL_CTX_set_tlsext_ticket_key_evp_cb p_SSL_CTX_set_tlsext_ticket_key_evp_cb
#define SSL_get_SSL_CTX p_SSL_get_SSL_CTX
#define SSL_get_servername p_SSL_get_servername
#define SSL_CTX_set_options p_SSL_CTX_set_options
#define X509_get_ext_d2i p_X509_get_ext_d2i
#define ERR_clear_error p_ERR_clear_error
#define OPENSSL_sk_num p_OPENSSL_sk_num
#define OPENSSL_sk_value p_OPENSSL_sk_value
#define GENERAL_NAMES_free p_GENERAL_NAMES_free
#define ASN1_STRING_get0_data p_ASN1_STRING_get0_data
#define ASN1_STRING_length p_ASN1_STRING_length
#define BIO_get_data p_BIO_get_data
#define BIO_set_data p_BIO_set_data
#define BIO_set_init p_BIO_set_init
#define BIO_get_new_index p_BIO_get_new_index
#define BIO_meth_new p_BIO_meth_new
#define BIO_meth_set_create p_BIO_meth_set_create
#define BIO_meth_set_ctrl p_BIO_meth_set_ctrl
#define BIO_meth_set_read p_BIO_meth_set_read
#define BIO_meth_set_write p_BIO_meth_set_write
#define BIO_new p_BIO_new
#define BIO_set_flags p_BIO_set_flags
#define BIO_clear_flags p_BIO_clear_flags
#define EVP_CIPHER_get_iv_length p_EVP_CIPHER_get_iv_length
#define EVP_DecryptInit_ex p_EVP_DecryptInit_ex
#define EVP_EncryptInit_ex p_EVP_EncryptInit_ex
#define EVP_MAC_CTX_set_params p_EVP_MAC_CTX_set_params
#define OSSL_PARAM_construct_end p_OSSL_PARAM_construct_end
#define OSSL_PARAM_construct_octet_string p_OSSL_PARAM_construct_octet_string
#define OSSL_PARAM_construct_utf8_string p_OSSL_PARAM_construct_utf8_string
#define RAND_bytes p_RAND_bytes

// MARK: - The BIO over the caller's buffers

static int bio_write(BIO *bio, const char *data, int length) {
    tern_tls_io *io = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    size_t room = io->out_cap - io->out_len;
    if (length <= 0) return 0;
    if (room == 0 || io->out == NULL) {
        BIO_set_retry_write(bio);
        return -1;
    }
    size_t n = (size_t)length < room ? (size_t)length : room;
    memcpy(io->out + io->out_len, data, n);
    io->out_len += n;
    return (int)n;
}

static int bio_read(BIO *bio, char *data, int length) {
    tern_tls_io *io = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    size_t left = io->in_len - io->in_pos;
    if (length <= 0) return 0;
    if (left == 0) {
        if (io->eof) return 0;
        BIO_set_retry_read(bio);
        return -1;
    }
    size_t n = (size_t)length < left ? (size_t)length : left;
    memcpy(data, io->in + io->in_pos, n);
    io->in_pos += n;
    return (int)n;
}

static long bio_ctrl(BIO *bio, int command, long number, void *pointer) {
    (void)number;
    (void)pointer;
    tern_tls_io *io = BIO_get_data(bio);
    switch (command) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_EOF:
        return io->eof && io->in_pos == io->in_len;
    case BIO_CTRL_PENDING:
        return (long)(io->in_len - io->in_pos);
    case BIO_CTRL_WPENDING:
        return 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *bio) {
    BIO_set_init(bio, 1);
    return 1;
}

static BIO_METHOD *bio_method(void) {
    // Made once per process (OpenSSL's BIO_METHOD is an immutable table after setup); the race of two first calls
    // at once makes two tables, one of them never freed, which is harmless.
    static BIO_METHOD *method;
    BIO_METHOD *m = __atomic_load_n(&method, __ATOMIC_ACQUIRE);
    if (m) return m;
    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tern pooled buffers");
    if (!m) return NULL;
    BIO_meth_set_write(m, bio_write);
    BIO_meth_set_read(m, bio_read);
    BIO_meth_set_ctrl(m, bio_ctrl);
    BIO_meth_set_create(m, bio_create);
    __atomic_store_n(&method, m, __ATOMIC_RELEASE);
    return m;
}

BIO *tern_tls_bio_new(tern_tls_io *io) {
    BIO_METHOD *m = bio_method();
    if (!m) return NULL;
    BIO *bio = BIO_new(m);
    if (bio) BIO_set_data(bio, io);
    return bio;
}

// MARK: - Session tickets

int tern_ticket_keys_rotate(tern_ticket_keys *keys) {
    unsigned long g = __atomic_load_n(&keys->generation, __ATOMIC_ACQUIRE) + 1;
    tern_ticket_key *k = &keys->keys[g % 4];
    if (RAND_bytes(k->name, sizeof k->name) <= 0 || RAND_bytes(k->aes, sizeof k->aes) <= 0 ||
        RAND_bytes(k->hmac, sizeof k->hmac) <= 0)
        return 0;
    __atomic_store_n(&keys->generation, g, __ATOMIC_RELEASE);
    return 1;
}

static int ticket_key_callback(SSL *ssl, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cipher,
                               EVP_MAC_CTX *mac, int encrypt) {
    tern_ticket_keys *keys = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (!keys || !keys->cipher) return -1;
    unsigned long g = __atomic_load_n(&keys->generation, __ATOMIC_ACQUIRE);
    int iv_length = EVP_CIPHER_get_iv_length(keys->cipher);
    for (unsigned long age = 0; age < 3 && age <= g; age++) {
        tern_ticket_key *k = &keys->keys[(g - age) % 4];
        if (!encrypt && memcmp(name, k->name, 16) != 0) continue;
        if (encrypt) {
            memcpy(name, k->name, 16);
            if (RAND_bytes(iv, iv_length) <= 0) return -1;
        }
        OSSL_PARAM params[3];
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k->hmac, sizeof k->hmac);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        if (!EVP_MAC_CTX_set_params(mac, params)) return -1;
        int ok = encrypt ? EVP_EncryptInit_ex(cipher, keys->cipher, NULL, k->aes, iv)
                         : EVP_DecryptInit_ex(cipher, keys->cipher, NULL, k->aes, iv);
        if (!ok) return -1;
        // An older key still decrypts; 2 asks OpenSSL to issue a fresh ticket under the current one.
        return encrypt || age == 0 ? 1 : 2;
    }
    return 0;  // unknown key: a full handshake
}

void tern_ctx_use_ticket_keys(SSL_CTX *ctx, tern_ticket_keys *keys) {
    SSL_CTX_set_app_data(ctx, keys);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_callback);
}

// MARK: - ALPN

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *out_length, const unsigned char *offered,
                       unsigned int offered_length, void *arg) {
    (void)ssl;
    const tern_alpn_list *list = arg;
    // Server preference: the first of ours the client offers.
    for (unsigned int i = 0; i < list->length; i += 1u + list->protocols[i]) {
        unsigned int n = list->protocols[i];
        for (unsigned int j = 0; j < offered_length; j += 1u + offered[j]) {
            if (offered[j] == n && j + 1u + n <= offered_length && memcmp(offered + j + 1, list->protocols + i + 1, n) == 0) {
                *out = offered + j + 1;
                *out_length = (unsigned char)n;
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

void tern_ctx_set_alpn_select(SSL_CTX *ctx, const tern_alpn_list *list) {
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, (void *)list);
}

// MARK: - Macros

int tern_ctx_set_min_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_min_proto_version(ctx, version); }
int tern_ctx_set_max_version(SSL_CTX *ctx, int version) { return (int)SSL_CTX_set_max_proto_version(ctx, version); }
long tern_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
long tern_ctx_set_session_cache_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_session_cache_mode(ctx, mode); }
long tern_set_host_name(SSL *ssl, const char *name) { return SSL_set_tlsext_host_name(ssl, name); }
void tern_ctx_set_hardening_options(SSL_CTX *ctx) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
}
int tern_ctx_set_groups(SSL_CTX *ctx, const char *groups) { return (int)SSL_CTX_set1_groups_list(ctx, groups); }
const char *tern_servername(const SSL *ssl) { return SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name); }

// MARK: - subjectAltNames

static int dns_matches(const unsigned char *pattern, size_t pattern_length, const uint8_t *name, size_t length) {
    if (pattern_length == length && strncasecmp((const char *)pattern, (const char *)name, length) == 0) return 1;
    // "*.example.com" matches exactly one label in front of ".example.com".
    if (pattern_length > 2 && pattern[0] == '*' && pattern[1] == '.') {
        const uint8_t *dot = memchr(name, '.', length);
        if (!dot || dot == name) return 0;
        size_t rest = length - (size_t)(dot - name);
        return rest == pattern_length - 1 && strncasecmp((const char *)pattern + 1, (const char *)dot, rest) == 0;
    }
    return 0;
}

// X509_get_ext_d2i decodes the whole extension on every call, and leaves errors queued when it is malformed (then
// NULL, as when it is absent: the caller sees no names, and the certificate's EXFLAG_INVALID says why).
static GENERAL_NAMES *decode_sans(X509 *cert) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) ERR_clear_error();
    return names;
}

int tern_cert_has_san(X509 *cert, int type, const uint8_t *name, size_t length) {
    GENERAL_NAMES *names = decode_sans(cert);
    if (!names) return 0;
    int found = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && !found; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type) continue;
        const ASN1_IA5STRING *s = type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
        const unsigned char *data = ASN1_STRING_get0_data(s);
        size_t n = (size_t)ASN1_STRING_length(s);
        if (type == GEN_DNS) {
            found = dns_matches(data, n, name, length);
        } else {
            found = n == length && memcmp(data, name, n) == 0;
        }
    }
    GENERAL_NAMES_free(names);
    return found;
}

long tern_cert_first_uri(X509 *cert, uint8_t *out, size_t capacity) {
    GENERAL_NAMES *names = decode_sans(cert);
    if (!names) return -1;
    long result = -1;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI) continue;
        size_t n = (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (n > capacity) n = capacity;
        memcpy(out, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), n);
        result = (long)n;
        break;
    }
    GENERAL_NAMES_free(names);
    return result;
}

// MARK: - Keys and certificates

#define ERR_peek_last_error p_ERR_peek_last_error
#define ASN1_TIME_to_tm p_ASN1_TIME_to_tm
#define EVP_PKEY_CTX_new_from_name p_EVP_PKEY_CTX_new_from_name
#define EVP_PKEY_CTX_free p_EVP_PKEY_CTX_free
#define EVP_PKEY_keygen_init p_EVP_PKEY_keygen_init
#define EVP_PKEY_CTX_set_group_name p_EVP_PKEY_CTX_set_group_name
#define EVP_PKEY_CTX_set_rsa_keygen_bits p_EVP_PKEY_CTX_set_rsa_keygen_bits
#define EVP_PKEY_generate p_EVP_PKEY_generate
#define EVP_PKEY_free p_EVP_PKEY_free
#define EVP_PKEY_get_base_id p_EVP_PKEY_get_base_id
#define EVP_PKEY_get_bits p_EVP_PKEY_get_bits
#define EVP_PKEY_get_group_name p_EVP_PKEY_get_group_name
#define EVP_sha256 p_EVP_sha256
#define X509_new p_X509_new
#define X509_free p_X509_free
#define X509_set_version p_X509_set_version
#define X509_get_serialNumber p_X509_get_serialNumber
#define X509_getm_notBefore p_X509_getm_notBefore
#define X509_getm_notAfter p_X509_getm_notAfter
#define X509_get0_notBefore p_X509_get0_notBefore
#define X509_get0_notAfter p_X509_get0_notAfter
#define X509_get_subject_name p_X509_get_subject_name
#define X509_get_issuer_name p_X509_get_issuer_name
#define X509_set_issuer_name p_X509_set_issuer_name
#define X509_NAME_add_entry_by_txt p_X509_NAME_add_entry_by_txt
#define X509_NAME_entry_count p_X509_NAME_entry_count
#define X509_NAME_get_index_by_NID p_X509_NAME_get_index_by_NID
#define X509_NAME_get_entry p_X509_NAME_get_entry
#define X509_NAME_ENTRY_get_data p_X509_NAME_ENTRY_get_data
#define X509_NAME_print_ex p_X509_NAME_print_ex
#define X509_set_pubkey p_X509_set_pubkey
#define X509_get0_pubkey p_X509_get0_pubkey
#define X509V3_set_ctx p_X509V3_set_ctx
#define X509V3_EXT_conf_nid p_X509V3_EXT_conf_nid
#define X509_add_ext p_X509_add_ext
#define X509_EXTENSION_free p_X509_EXTENSION_free
#define X509_add1_ext_i2d p_X509_add1_ext_i2d
#define X509_sign p_X509_sign
#define X509_get_extension_flags p_X509_get_extension_flags
#define X509_get_key_usage p_X509_get_key_usage
#define X509_get_extended_key_usage p_X509_get_extended_key_usage
#define GENERAL_NAME_new p_GENERAL_NAME_new
#define GENERAL_NAME_free p_GENERAL_NAME_free
#define GENERAL_NAME_set0_value p_GENERAL_NAME_set0_value
#define ASN1_IA5STRING_new p_ASN1_IA5STRING_new
#define ASN1_STRING_set p_ASN1_STRING_set
#define ASN1_STRING_free p_ASN1_STRING_free
#define ASN1_TIME_set p_ASN1_TIME_set
#define BN_to_ASN1_INTEGER p_BN_to_ASN1_INTEGER
#define ASN1_INTEGER_to_BN p_ASN1_INTEGER_to_BN
#define BN_new p_BN_new
#define BN_free p_BN_free
#define BN_rand p_BN_rand
#define BN_bn2hex p_BN_bn2hex
#define CRYPTO_free p_CRYPTO_free
#define OPENSSL_sk_new_null p_OPENSSL_sk_new_null
#define OPENSSL_sk_push p_OPENSSL_sk_push
#define OPENSSL_sk_free p_OPENSSL_sk_free
#define BIO_s_mem p_BIO_s_mem
#define BIO_new_mem_buf p_BIO_new_mem_buf
#define BIO_free p_BIO_free
#define BIO_ctrl p_BIO_ctrl
#define PEM_write_bio_X509 p_PEM_write_bio_X509
#define PEM_write_bio_PrivateKey p_PEM_write_bio_PrivateKey
#define PEM_read_bio_X509 p_PEM_read_bio_X509
#define PEM_read_bio_PrivateKey p_PEM_read_bio_PrivateKey
#define ASN1_TIME_print_ex p_ASN1_TIME_print_ex
#define X509_STORE_new p_X509_STORE_new
#define X509_STORE_free p_X509_STORE_free
#define X509_STORE_add_cert p_X509_STORE_add_cert
#define X509_STORE_CTX_new p_X509_STORE_CTX_new
#define X509_STORE_CTX_free p_X509_STORE_CTX_free
#define X509_STORE_CTX_init p_X509_STORE_CTX_init
#define X509_STORE_CTX_set_flags p_X509_STORE_CTX_set_flags
#define X509_STORE_CTX_set_purpose p_X509_STORE_CTX_set_purpose
#define X509_verify_cert p_X509_verify_cert
#define X509_STORE_CTX_get_error p_X509_STORE_CTX_get_error
#define X509_STORE_CTX_get_error_depth p_X509_STORE_CTX_get_error_depth
#define X509_STORE_CTX_get1_chain p_X509_STORE_CTX_get1_chain

EVP_PKEY *tern_key_generate(int kind) {
    if (kind != TERN_KEY_EC_P256 && kind != TERN_KEY_RSA_2048) return NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, kind == TERN_KEY_RSA_2048 ? "RSA" : "EC", NULL);
    if (!ctx) return NULL;
    EVP_PKEY *key = NULL;
    int ok = EVP_PKEY_keygen_init(ctx) > 0 &&
             (kind == TERN_KEY_RSA_2048 ? EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048)
                                        : EVP_PKEY_CTX_set_group_name(ctx, "P-256")) > 0 &&
             EVP_PKEY_generate(ctx, &key) > 0;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

static int add_extension(X509 *cert, X509V3_CTX *v3, int nid, const char *value) {
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (!ext) return 0;
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

static int add_names(GENERAL_NAMES *names, int type, const char *const *values, size_t count) {
    for (size_t i = 0; i < count; i++) {
        size_t n = strlen(values[i]);
        GENERAL_NAME *g = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        if (!g || !s || n > INT32_MAX || !ASN1_STRING_set(s, values[i], (int)n)) {
            GENERAL_NAME_free(g);
            ASN1_STRING_free(s);
            return 0;
        }
        GENERAL_NAME_set0_value(g, type, s);
        if (sk_GENERAL_NAME_push(names, g) <= 0) {
            GENERAL_NAME_free(g);
            return 0;
        }
    }
    return 1;
}

static int add_entry(X509_NAME *name, const char *field, const char *value) {
    return !value || X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0);
}

X509 *tern_cert_sign(const tern_cert_spec *spec, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key) {
    X509 *cert = X509_new();
    BIGNUM *serial = BN_new();
    int ok = cert && serial && X509_set_version(cert, X509_VERSION_3) &&
             BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) &&
             BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) &&
             ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)spec->not_before) &&
             ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)spec->not_after) && X509_set_pubkey(cert, key);
    BN_free(serial);
    X509_NAME *subject = ok ? X509_get_subject_name(cert) : NULL;
    ok = ok && add_entry(subject, "O", spec->organization) && add_entry(subject, "CN", spec->common_name) &&
         X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : subject);
    X509V3_CTX v3;
    memset(&v3, 0, sizeof v3);
    if (ok) X509V3_set_ctx(&v3, issuer ? issuer : cert, cert, NULL, NULL, 0);
    ok = ok && add_extension(cert, &v3, NID_basic_constraints, spec->is_ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
         (!spec->key_usage || add_extension(cert, &v3, NID_key_usage, spec->key_usage)) &&
         (!spec->extended_key_usage || add_extension(cert, &v3, NID_ext_key_usage, spec->extended_key_usage)) &&
         add_extension(cert, &v3, NID_subject_key_identifier, "hash") &&
         (!issuer || add_extension(cert, &v3, NID_authority_key_identifier, "keyid:always"));
    if (ok && spec->uri_count + spec->dns_count > 0) {
        GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
        ok = names && add_names(names, GEN_URI, spec->uris, spec->uri_count) &&
             add_names(names, GEN_DNS, spec->dns_names, spec->dns_count) &&
             X509_add1_ext_i2d(cert, NID_subject_alt_name, names,
                               spec->san_critical < 0 ? X509_NAME_entry_count(subject) == 0 : spec->san_critical != 0,
                               X509V3_ADD_DEFAULT) == 1;
        GENERAL_NAMES_free(names);
    }
    ok = ok && X509_sign(cert, issuer_key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

// Hands a memory BIO's contents to the caller (as tern_cert_pem describes) and frees it.
static long take_bio(BIO *bio, int ok, uint8_t *out, size_t capacity) {
    long result = -1;
    char *data = NULL;
    long n = ok ? BIO_get_mem_data(bio, &data) : -1;
    if (n >= 0) {
        if (n > 0 && (size_t)n <= capacity) memcpy(out, data, (size_t)n);
        result = n;
    }
    BIO_free(bio);
    return result;
}

long tern_cert_pem(X509 *cert, uint8_t *out, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    return bio ? take_bio(bio, PEM_write_bio_X509(bio, cert), out, capacity) : -1;
}

long tern_key_pem(EVP_PKEY *key, uint8_t *out, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    return bio ? take_bio(bio, PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), out, capacity) : -1;
}

long tern_cert_read_pem(const uint8_t *pem, size_t length, X509 **out, size_t capacity) {
    if (length > INT32_MAX) return -1;
    BIO *bio = BIO_new_mem_buf(pem, (int)length);
    if (!bio) return -1;
    ERR_clear_error();
    size_t n = 0;
    while (n < capacity) {
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!cert) break;
        out[n++] = cert;
    }
    long result = (long)n;
    if (n < capacity) {
        // The loop ends at the first block that is not a certificate; only "no more PEM blocks" is a clean end.
        unsigned long e = ERR_peek_last_error();
        if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
            ERR_clear_error();
        } else {
            for (size_t i = 0; i < n; i++) X509_free(out[i]);
            result = -1;
        }
    }
    BIO_free(bio);
    return result;
}

// An encrypted key is refused rather than prompting on the terminal (OpenSSL's default callback would).
static int no_password(char *buffer, int size, int rw, void *u) {
    (void)buffer;
    (void)size;
    (void)rw;
    (void)u;
    return -1;
}

EVP_PKEY *tern_key_read_pem(const uint8_t *pem, size_t length) {
    if (length > INT32_MAX) return NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)length);
    if (!bio) return NULL;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    BIO_free(bio);
    return key;
}

static int64_t epoch_seconds(const ASN1_TIME *t, int *ok) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        *ok = 0;
        return 0;
    }
    return (int64_t)timegm(&tm);
}

int tern_cert_get_facts(X509 *cert, tern_cert_facts *facts) {
    memset(facts, 0, sizeof *facts);
    uint32_t flags = X509_get_extension_flags(cert);
    if (flags & EXFLAG_INVALID) {
        ERR_clear_error();
        return 0;
    }
    facts->is_ca = (flags & EXFLAG_CA) != 0;
    facts->has_basic_constraints = (flags & EXFLAG_BCONS) != 0;
    // EXFLAG_SS: self-issued and its key identifiers (when present) match; the signature is not checked.
    facts->self_signed = (flags & EXFLAG_SS) != 0;
    facts->has_key_usage = (flags & EXFLAG_KUSAGE) != 0;
    facts->key_usage = facts->has_key_usage ? X509_get_key_usage(cert) : 0;
    facts->has_extended_key_usage = (flags & EXFLAG_XKUSAGE) != 0;
    facts->extended_key_usage = facts->has_extended_key_usage ? X509_get_extended_key_usage(cert) : 0;
    int ok = 1;
    facts->not_before = epoch_seconds(X509_get0_notBefore(cert), &ok);
    facts->not_after = epoch_seconds(X509_get0_notAfter(cert), &ok);
    EVP_PKEY *key = X509_get0_pubkey(cert);
    if (key) {
        int id = EVP_PKEY_get_base_id(key);
        facts->key_kind = id == EVP_PKEY_EC ? 1 : id == EVP_PKEY_RSA ? 2 : 0;
        facts->key_bits = EVP_PKEY_get_bits(key);
        size_t n = 0;
        if (id == EVP_PKEY_EC && !EVP_PKEY_get_group_name(key, facts->key_group, sizeof facts->key_group, &n))
            facts->key_group[0] = 0;
    }
    // Decoding the extensions (on the first call) or the dates may have queued errors; the result says it all.
    ERR_clear_error();
    return ok;
}

long tern_cert_name_text(X509 *cert, int issuer, uint8_t *out, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return -1;
    // "O=cluster.local, CN=Intermediate CA": the one-line form without spaces around '=', UTF-8 kept as it is.
    unsigned long flags = (XN_FLAG_ONELINE & ~XN_FLAG_SPC_EQ & ~ASN1_STRFLGS_ESC_MSB) | ASN1_STRFLGS_UTF8_CONVERT;
    X509_NAME *name = issuer ? X509_get_issuer_name(cert) : X509_get_subject_name(cert);
    return take_bio(bio, X509_NAME_print_ex(bio, name, 0, flags) >= 0, out, capacity);
}

long tern_cert_subject_entry(X509 *cert, int nid, uint8_t *out, size_t capacity) {
    X509_NAME *name = X509_get_subject_name(cert);
    int index = X509_NAME_get_index_by_NID(name, nid, -1);
    if (index < 0) return -1;
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    size_t n = (size_t)ASN1_STRING_length(s);
    memcpy(out, ASN1_STRING_get0_data(s), n < capacity ? n : capacity);
    return (long)n;
}

long tern_cert_sans(X509 *cert, int type, uint8_t *out, size_t capacity) {
    GENERAL_NAMES *names = decode_sans(cert);
    if (!names) return 0;
    size_t total = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type) continue;
        size_t n = (size_t)ASN1_STRING_length(g->d.ia5);
        if (total + 4 + n <= capacity) {
            uint8_t *p = out + total;
            p[0] = (uint8_t)(n >> 24), p[1] = (uint8_t)(n >> 16), p[2] = (uint8_t)(n >> 8), p[3] = (uint8_t)n;
            memcpy(p + 4, ASN1_STRING_get0_data(g->d.ia5), n);
        }
        total += 4 + n;
    }
    GENERAL_NAMES_free(names);
    return (long)total;
}

long tern_cert_sole_uri(X509 *cert, uint8_t *out, size_t capacity, int *count) {
    *count = 0;
    GENERAL_NAMES *names = decode_sans(cert);
    if (!names) return -1;
    const GENERAL_NAME *uri = NULL;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI) continue;
        ++*count;
        uri = g;
    }
    long result = -1;
    if (*count == 1) {
        size_t n = (size_t)ASN1_STRING_length(uri->d.uniformResourceIdentifier);
        memcpy(out, ASN1_STRING_get0_data(uri->d.uniformResourceIdentifier), n < capacity ? n : capacity);
        result = (long)n;
    }
    GENERAL_NAMES_free(names);
    return result;
}

long tern_cert_time_text(X509 *cert, int which, uint8_t *out, size_t capacity) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return -1;
    const ASN1_TIME *t = which ? X509_get0_notAfter(cert) : X509_get0_notBefore(cert);
    return take_bio(bio, ASN1_TIME_print_ex(bio, t, ASN1_DTFLGS_ISO8601) == 1, out, capacity);
}

long tern_cert_serial_hex(X509 *cert, uint8_t *out, size_t capacity) {
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    if (!hex) return -1;
    size_t n = strlen(hex);
    memcpy(out, hex, n < capacity ? n : capacity);
    OPENSSL_free(hex);
    return (long)n;
}

int tern_cert_verify(X509 *leaf, X509 *const *untrusted, size_t untrusted_count, X509 *const *roots,
                     size_t root_count, int purpose, unsigned long flags, int *depth, STACK_OF(X509) **built) {
    *depth = 0;
    if (built) *built = NULL;
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    STACK_OF(X509) *chain = sk_X509_new_null();
    int ok = store && ctx && chain;
    for (size_t i = 0; ok && i < root_count; i++) ok = X509_STORE_add_cert(store, roots[i]);
    for (size_t i = 0; ok && i < untrusted_count; i++) ok = sk_X509_push(chain, untrusted[i]) > 0;
    int result = X509_V_ERR_OUT_OF_MEM;
    if (ok && X509_STORE_CTX_init(ctx, store, leaf, chain)) {
        X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_X509_STRICT | flags);
        if (purpose) X509_STORE_CTX_set_purpose(ctx, purpose);
        int verified = X509_verify_cert(ctx);
        result = verified == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
        if (verified != 1 && result == X509_V_OK) result = X509_V_ERR_UNSPECIFIED;
        if (verified != 1) *depth = X509_STORE_CTX_get_error_depth(ctx);
        if (verified == 1 && built) {
            *built = X509_STORE_CTX_get1_chain(ctx);
            if (!*built) result = X509_V_ERR_OUT_OF_MEM;
        }
    }
    ERR_clear_error();  // a failure is in `result`; what OpenSSL queued on the way would only mislead a later message
    X509_STORE_CTX_free(ctx);
    sk_X509_free(chain);  // the certificates stay the caller's
    X509_STORE_free(store);
    return result;
}
