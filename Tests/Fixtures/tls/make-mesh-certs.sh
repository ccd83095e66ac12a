#!/usr/bin/env bash
# Makes the mesh identities the mesh tests use, in OUTDIR: good ones with `tern cert` (TERN, the binary), and with
# the openssl CLI the certificates `tern cert` would never issue, each signed by the mesh root unless said. Every
# identity is a directory as Istio mounts one (cert-chain.pem, key.pem, root-cert.pem):
#   ca/                      the mesh CA (tern cert ca): root-cert.pem, root-key.pem; trust domain cluster.local
#   frontend/ backend/ other/    namespace default, service accounts of those names
#   frontend-next/ backend-next/   second certificates for frontend and backend (a rotation's)
#   admin/                   namespace ops, service account admin
#   foreign/                 frontend's SPIFFE ID from an unrelated CA (other-ca/)
#   otherdomain/             spiffe://other.local/ns/default/sa/frontend, from the mesh CA
#   expired/                 spiffe://cluster.local/ns/default/sa/expired, valid 2020-01-01 to 2020-01-02
#   nospiffe/                a DNS name and no URI
#   twoids/                  two SPIFFE IDs
#   caleaf/                  a SPIFFE ID on a certificate with basicConstraints CA:TRUE
set -euo pipefail
out=${1:?usage: make-mesh-certs.sh OUTDIR TERN}
tern=${2:?usage: make-mesh-certs.sh OUTDIR TERN}
mkdir -p "$out"
cd "$out"
"$tern" cert ca --out ca >/dev/null
"$tern" cert ca --out other-ca >/dev/null
issue() {  # dir ca namespace service-account [more]
    "$tern" cert issue --ca "$2" --namespace "$3" --service-account "$4" --out "$1" "${@:5}" >/dev/null
}
issue frontend ca default frontend
issue backend ca default backend
issue backend-next ca default backend
issue frontend-next ca default frontend
issue other ca default other
issue admin ca ops admin
issue foreign other-ca default frontend
issue otherdomain ca default frontend --trust-domain other.local

# signed NAME START END EXTENSIONS...: a certificate the mesh root signs through `openssl ca` (the only way OpenSSL
# 3.0 sets both dates), with the extension lines given.
signed() {
    local name=$1 start=$2 end=$3
    shift 3
    mkdir -p "$name" "ca-$name"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name/key.pem" 2>/dev/null
    openssl req -new -key "$name/key.pem" -subj "/O=cluster.local" -out "$name.csr" 2>/dev/null
    : > "ca-$name/index.txt"
    echo 01 > "ca-$name/serial"
    {
        printf '[ca]\ndefault_ca = d\n[d]\ndir = ca-%s\ndatabase = ca-%s/index.txt\nserial = ca-%s/serial\n' "$name" "$name" "$name"
        printf 'new_certs_dir = ca-%s\ndefault_md = sha256\npolicy = p\ncopy_extensions = none\nx509_extensions = e\n' "$name"
        printf 'unique_subject = no\n[p]\norganizationName = supplied\n[e]\n'
        printf '%s\n' "$@"
    } > "ca-$name/openssl.cnf"
    openssl ca -batch -config "ca-$name/openssl.cnf" -cert ca/root-cert.pem -keyfile ca/root-key.pem -in "$name.csr" \
        -startdate "$start" -enddate "$end" -out "$name/cert-chain.pem" -notext 2>/dev/null
    cp ca/root-cert.pem "$name/root-cert.pem"
    rm -rf "ca-$name" "$name.csr"
}
now=$(date -u -d '-1 hour' +%Y%m%d%H%M%SZ)
later=$(date -u -d '+1 day' +%Y%m%d%H%M%SZ)
usage=("keyUsage = critical,digitalSignature,keyEncipherment" "extendedKeyUsage = serverAuth,clientAuth")
signed expired 20200101000000Z 20200102000000Z "subjectAltName = critical,URI:spiffe://cluster.local/ns/default/sa/expired" \
    "basicConstraints = critical,CA:FALSE" "${usage[@]}"
signed nospiffe "$now" "$later" "subjectAltName = critical,DNS:backend.default.svc" "basicConstraints = critical,CA:FALSE" "${usage[@]}"
signed twoids "$now" "$later" \
    "subjectAltName = critical,URI:spiffe://cluster.local/ns/default/sa/frontend,URI:spiffe://cluster.local/ns/default/sa/admin" \
    "basicConstraints = critical,CA:FALSE" "${usage[@]}"
signed caleaf "$now" "$later" "subjectAltName = critical,URI:spiffe://cluster.local/ns/default/sa/frontend" \
    "basicConstraints = critical,CA:TRUE" "keyUsage = critical,digitalSignature,keyCertSign" "extendedKeyUsage = serverAuth,clientAuth"
