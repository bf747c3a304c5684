// SPDX-License-Identifier: Apache-2.0
// Signature checks with OpenSSL's libcrypto (FWA_HAVE_OPENSSL), chosen over Mbed TLS because
// Debian's Mbed TLS 2.28 has no Ed25519 (docs/releases.md). Without it, have_crypto() is false
// and release::verify refuses every policy (no_crypto) unless a verification callback is given.
#include "release/release.h"

#ifdef FWA_HAVE_OPENSSL
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#endif

namespace fwa {
namespace release {

// ECDSA signatures must be strict DER: SEQUENCE { INTEGER r, INTEGER s }, minimal lengths,
// minimal positive integers, nothing after (both S forms are accepted).
[[maybe_unused]] static bool strict_der_ecdsa(const uint8_t* p, size_t n) {
  if (n < 8 || p[0] != 0x30) return false;
  size_t len = p[1];
  size_t i = 2;
  if (len == 0x81) {  // long form only when needed (>= 128)
    if (n < 3 || p[2] < 0x80) return false;
    len = p[2];
    i = 3;
  } else if (len > 0x7f) {
    return false;
  }
  if (i + len != n) return false;
  for (int k = 0; k < 2; ++k) {
    if (i + 2 > n || p[i] != 0x02) return false;
    const size_t l = p[i + 1];
    if (l == 0 || l > 33 || i + 2 + l > n) return false;
    const uint8_t* v = p + i + 2;
    if (v[0] & 0x80) return false;                             // negative
    if (l > 1 && v[0] == 0 && !(v[1] & 0x80)) return false;   // a needless leading zero
    i += 2 + l;
  }
  return i == n;
}

#ifdef FWA_HAVE_OPENSSL

bool have_crypto() { return true; }

int crypto_verify(Algorithm alg, const uint8_t* spki, size_t spki_len, const uint8_t* msg,
                  size_t msg_len, const uint8_t* sig, size_t sig_len) {
  if (alg == Algorithm::ecdsa_p256_sha256 && !strict_der_ecdsa(sig, sig_len)) return 0;
  if (alg == Algorithm::ed25519 && sig_len != 64) return 0;
  const unsigned char* p = spki;
  EVP_PKEY* key = d2i_PUBKEY(nullptr, &p, long(spki_len));
  if (!key) {
    ERR_clear_error();
    return 0;
  }
  const int want = alg == Algorithm::ed25519 ? EVP_PKEY_ED25519 : EVP_PKEY_EC;
  int ok = 0;
  if (EVP_PKEY_get_base_id(key) == want && p == spki + spki_len) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    if (ctx &&
        EVP_DigestVerifyInit(ctx, nullptr,
                             alg == Algorithm::ed25519 ? nullptr : EVP_sha256(), nullptr,
                             key) == 1 &&
        EVP_DigestVerify(ctx, sig, sig_len, msg, msg_len) == 1)
      ok = 1;
    EVP_MD_CTX_free(ctx);
  }
  EVP_PKEY_free(key);
  ERR_clear_error();  // a refused signature leaves nothing in this thread's error queue
  return ok;
}

#else

bool have_crypto() { return false; }

int crypto_verify(Algorithm, const uint8_t*, size_t, const uint8_t*, size_t, const uint8_t*,
                  size_t) {
  return -1;
}

#endif

}  // namespace release
}  // namespace fwa
