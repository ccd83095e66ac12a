// OpenSSL 3 (Debian's libssl-dev headers; libssl.so.3 loaded at run time) for TernTLS and the mesh CA of TernControl.
// The shim exists for what
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

// MARK: - Keys and certificates (the mesh CA, X.509-SVID checks)
// Each does one whole job that would otherwise take Swift a dozen calls and OpenSSL's macros; what goes into a
// certificate (which usages, which names, how long) is the caller's decision. Failures return NULL or -1 with
// OpenSSL's error queue set.

enum { TERN_KEY_EC_P256 = 1, TERN_KEY_RSA_2048 = 2 };

// A new private key of `kind` (TERN_KEY_*).
EVP_PKEY *tern_key_generate(int kind);

typedef struct {
    const char *organization;        // subject O, or NULL
    const char *common_name;         // subject CN, or NULL
    const char *const *uris;         // URI subjectAltNames
    size_t uri_count;
    const char *const *dns_names;    // DNS subjectAltNames
    size_t dns_count;
    int is_ca;                       // basicConstraints, always present and critical: CA:TRUE or CA:FALSE
    const char *key_usage;           // X509v3 configuration text ("critical,digitalSignature"), or NULL: none
    const char *extended_key_usage;  // the same ("serverAuth,clientAuth"), or NULL: none
    int64_t not_before;              // seconds since the epoch
    int64_t not_after;
    int san_critical;                // subjectAltName critical: 1 yes, 0 no, -1 when the subject is empty (RFC 5280)
} tern_cert_spec;

// A version 3 certificate of `key`'s public half as `spec` says, with a random positive 127-bit serial and a
// subjectKeyIdentifier, signed with SHA-256 by `issuer_key`: issued by `issuer` (with an authorityKeyIdentifier
// naming its key) or, when `issuer` is NULL, self-signed (`issuer_key` is then `key`). The subjectAltName is
// critical as `san_critical` says: -1, when the subject is empty, as RFC 5280 §4.2.1.6 requires (and Go, so Istio,
// does); 0 or 1 make a certificate that breaks the rule on purpose (tests).
X509 *tern_cert_sign(const tern_cert_spec *spec, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key);

// PEM text of a certificate, or of a private key (PKCS #8, unencrypted), into out[0, capacity): returns its
// length (copied only when it fits, so a caller with too small a buffer calls again), or -1.
long tern_cert_pem(X509 *cert, uint8_t *out, size_t capacity);
long tern_key_pem(EVP_PKEY *key, uint8_t *out, size_t capacity);

// The certificates of PEM text, in order, into out[0, capacity) (each owned by the caller): returns how many, 0
// when there is none, or -1 when a PEM block is malformed (the ones read before it are freed). `capacity` of them
// means there may be more: the caller frees those and calls again with more room.
long tern_cert_read_pem(const uint8_t *pem, size_t length, X509 **out, size_t capacity);
// The first private key of PEM text (PKCS #8, or traditional RSA / EC), or NULL.
EVP_PKEY *tern_key_read_pem(const uint8_t *pem, size_t length);

// What a certificate says of itself, for `tern cert inspect` and the X.509-SVID rule.
typedef struct {
    int is_ca;                        // basicConstraints CA:TRUE
    int has_basic_constraints;
    int self_signed;                  // EXFLAG_SS: subject = issuer and the key identifiers match; the signature
                                      // is NOT checked (X509_V_FLAG_CHECK_SS_SIGNATURE on tern_cert_verify does)
    int has_key_usage;
    uint32_t key_usage;               // KU_* bits of x509v3.h (KU_DIGITAL_SIGNATURE, KU_KEY_CERT_SIGN, ...)
    int has_extended_key_usage;
    uint32_t extended_key_usage;      // XKU_* bits (XKU_SSL_SERVER, XKU_SSL_CLIENT, ...)
    int64_t not_before;               // seconds since the epoch
    int64_t not_after;
    int key_kind;                     // TERN_KEY_EC_P256 / TERN_KEY_RSA_2048 family: 1 EC, 2 RSA, 0 other
    int key_bits;
    char key_group[32];               // an EC key's curve ("prime256v1"), else empty
} tern_cert_facts;

// Fills `facts`; 1, or 0 when the certificate's dates or extensions cannot be decoded.
int tern_cert_get_facts(X509 *cert, tern_cert_facts *facts);

// The subject (`issuer` 0) or issuer (1) as one line, "O=cluster.local, CN=Intermediate CA", into out (as
// tern_cert_pem); an empty name is "".
long tern_cert_name_text(X509 *cert, int issuer, uint8_t *out, size_t capacity);
// The first subject entry of `nid` (NID_organizationName, ...) as UTF-8, into out (as tern_cert_pem), or -1.
long tern_cert_subject_entry(X509 *cert, int nid, uint8_t *out, size_t capacity);
// Every subjectAltName of `type` (GEN_URI, GEN_DNS), from one decoding of the extension, into out (as
// tern_cert_pem): each as its length in 4 bytes, big-endian, then its bytes. 0 when there is none (or the
// extension is absent or malformed). One call, so a certificate with thousands of names costs one pass.
long tern_cert_sans(X509 *cert, int type, uint8_t *out, size_t capacity);
// The certificate's URI subjectAltNames counted in one pass into *count and, when there is exactly one (an
// X.509-SVID's), that one into out (its whole length returned, copied up to `capacity`); else -1.
long tern_cert_sole_uri(X509 *cert, uint8_t *out, size_t capacity, int *count);
// notBefore (`which` 0) or notAfter (1) as ISO 8601 in UTC, "2026-12-07 20:28:48Z", into out (as tern_cert_pem).
long tern_cert_time_text(X509 *cert, int which, uint8_t *out, size_t capacity);
// The serial number in hexadecimal, into out (as tern_cert_pem).
long tern_cert_serial_hex(X509 *cert, uint8_t *out, size_t capacity);

// X509_verify_cert of `leaf`, with `untrusted` as the intermediates it may chain through, against a store holding
// exactly `roots`, under X509_V_FLAG_X509_STRICT | `flags`, for `purpose` (X509_PURPOSE_*, or 0: any). Returns
// X509_V_OK, or the X.509 error with the depth of the certificate it concerns in *depth. A self-signed root's own
// signature is checked only with X509_V_FLAG_CHECK_SS_SIGNATURE in `flags`. When `built` is not NULL and the
// chain verifies, *built is the chain verification built (leaf first, its trust anchor last; the caller frees the
// stack with OPENSSL_sk_free and owns a reference to each certificate). Leaves OpenSSL's error queue empty.
int tern_cert_verify(X509 *leaf, X509 *const *untrusted, size_t untrusted_count, X509 *const *roots,
                     size_t root_count, int purpose, unsigned long flags, int *depth, STACK_OF(X509) **built);

#endif
