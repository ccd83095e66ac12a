// OpenSSL 3 (Debian's libssl-dev headers; libssl.so.3 loaded at run time) for TernTLS. The shim exists for what
// Swift cannot import cleanly: the macros OpenSSL's API is partly made of (SSL_CTX_set_min_proto_version,
// SSL_set_tlsext_host_name, BIO retry flags), the C callbacks a custom BIO, ALPN selection and session-ticket keys
// need, the walk over a certificate's subjectAltNames, and loading OpenSSL only when TLS is first needed (every
// OpenSSL function Swift calls is a tern_ wrapper: tern_openssl_functions.h). Its only state is the resolved
// functions and the BIO method table, each made once.
#ifndef TERN_OPENSSL_H
#define TERN_OPENSSL_H
#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>
#include <time.h>
#include "tern_openssl_functions.h"

// Loads libssl.so.3 (and so libcrypto.so.3) and resolves every function of TERN_OPENSSL_FUNCTIONS, once per
// process (later calls return the first result). Returns 1, or 0 with the reason in `error`. Call it before any
// tern_ wrapper.
int tern_openssl_load(char *error, size_t capacity);

#define TERN_OPENSSL_DECLARE(ret, name, params, args) ret tern_##name params;
TERN_OPENSSL_FUNCTIONS(TERN_OPENSSL_DECLARE)
#undef TERN_OPENSSL_DECLARE

// Where a session's BIO reads ciphertext from and writes ciphertext to: memory its owner points at the reactor's
// pooled buffers before each call into OpenSSL. Reads take from in[in_pos, in_len); at the end they ask to be
// retried (SSL_ERROR_WANT_READ), or report the end of the stream once `eof` is set. Writes append to
// out[out_len, out_cap); when it is full they ask to be retried (SSL_ERROR_WANT_WRITE).
typedef struct {
    const uint8_t *in;
    size_t in_len;
    size_t in_pos;
    uint8_t *out;
    size_t out_cap;
    size_t out_len;
    int eof;
} tern_tls_io;

// A BIO reading and writing through `io` (which must outlive it). NULL when OpenSSL is out of memory.
BIO *tern_tls_bio_new(tern_tls_io *io);

// Session-ticket keys shared by every context of the process (so a ticket issued before a certificate reload, or
// by another reactor, still resumes): the current key is keys[generation % 4]; the two before it are still
// accepted. `tern_ticket_keys_rotate` writes the next slot and then publishes it (release); readers load the
// generation with acquire, so a slot is never read while written (it is written again only two rotations after
// it stopped being accepted).
typedef struct {
    uint8_t name[16];
    uint8_t aes[32];
    uint8_t hmac[32];
} tern_ticket_key;

typedef struct {
    unsigned long generation;
    tern_ticket_key keys[4];
    // AES-256-CBC, fetched once: an implicit fetch per ticket takes OpenSSL's method-store lock.
    EVP_CIPHER *cipher;
} tern_ticket_keys;

// Fills the next slot with fresh random keys and makes it current. Returns 1, or 0 when the random generator failed.
int tern_ticket_keys_rotate(tern_ticket_keys *keys);

// Makes `ctx` issue and accept tickets with `keys` (which must outlive it).
void tern_ctx_use_ticket_keys(SSL_CTX *ctx, tern_ticket_keys *keys);

// Server ALPN: the first protocol of `list->protocols` (wire format: length-prefixed names) that the client
// offers; none in common continues without ALPN, as Envoy does. The list and its bytes are the caller's and
// outlive `ctx`.
typedef struct {
    const uint8_t *protocols;
    unsigned int length;
} tern_alpn_list;

void tern_ctx_set_alpn_select(SSL_CTX *ctx, const tern_alpn_list *list);

// Macros of ssl.h as functions.
int tern_ctx_set_min_version(SSL_CTX *ctx, int version);
int tern_ctx_set_max_version(SSL_CTX *ctx, int version);
long tern_ctx_set_mode(SSL_CTX *ctx, long mode);
long tern_ctx_set_session_cache_mode(SSL_CTX *ctx, long mode);
long tern_set_host_name(SSL *ssl, const char *name);
// No renegotiation (a CPU attack on servers), no compression (CRIME), the server's cipher order; a stream that
// ends without close_notify is an end of stream (as HTTP/1.1 peers commonly close), not an error.
void tern_ctx_set_hardening_options(SSL_CTX *ctx);
int tern_ctx_set_groups(SSL_CTX *ctx, const char *groups);

// Whether `cert` has a subjectAltName of `type` (GEN_DNS or GEN_URI) equal to `name` (DNS names compared without
// case; a DNS SAN "*.example.com" matches one label, as RFC 6125 §6.4.3 allows).
int tern_cert_has_san(X509 *cert, int type, const uint8_t *name, size_t length);

// Copies the first URI subjectAltName of `cert` into `out` (at most `capacity` bytes) and returns its length, or -1.
long tern_cert_first_uri(X509 *cert, uint8_t *out, size_t capacity);


// SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name).
const char *tern_servername(const SSL *ssl);

#endif
