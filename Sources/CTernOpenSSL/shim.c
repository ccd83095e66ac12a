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

int tern_cert_has_san(X509 *cert, int type, const uint8_t *name, size_t length) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
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
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
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
