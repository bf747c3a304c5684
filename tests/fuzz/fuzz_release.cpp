// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: the signed-release parsers (csrc/release) on the same input: the .sig file
// (JSON Lines of Sigstore bundles with DSSE envelopes) and, when it parses, its statement; the
// same file as a signed policy's .sig (its own payloadType and 32 KiB payload cap); the
// statement alone; the trust policy (its general-JSON canonicalizer and schema); a root key's
// PEM; strict base64.
// Built and run by tests/fuzz/run_fuzz.sh with -fsanitize=fuzzer,address,undefined, seeded with
// valid files from tests/capi/make_release_fixtures.py.
//
// Invariants checked besides memory safety (a violation traps):
//   * a parsed .sig file has 1..16 bundles, a payload <= 16 KiB (a policy's: <= 32 KiB),
//     signatures of 1..256 bytes;
//   * a parsed root key is a P-256 or Ed25519 SubjectPublicKeyInfo whose id is its SHA-256;
//   * a canonicalized document is a fixed point (canonicalizing it again gives itself) and the
//     artifact manifest's canonical-JSON parser accepts it;
//   * base64 that decodes re-encodes to the same text (one encoding per byte string);
//   * a parsed policy has 1..16 roles, <= 64 keys, and each key's id is its DER's SHA-256.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "artifact/json.h"
#include "artifact/sha256.h"
#include "release/release.h"

namespace rel = fwa::release;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

std::string encode64(const std::vector<uint8_t>& in) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t w = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8 | in[i + 2];
    for (int s = 18; s >= 0; s -= 6) out.push_back(a[(w >> s) & 63]);
  }
  if (in.size() - i == 1) {
    const uint32_t w = uint32_t(in[i]) << 16;
    out += {a[w >> 18], a[(w >> 12) & 63], '=', '='};
  } else if (in.size() - i == 2) {
    const uint32_t w = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8;
    out += {a[w >> 18], a[(w >> 12) & 63], a[(w >> 6) & 63], '='};
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string msg;
  rel::SignatureFile sf;
  if (rel::parse_signatures(data, size, rel::kStatementPayloadType, &sf, &msg) ==
      fwa::Status::ok) {
    check(!sf.bundles.empty() && sf.bundles.size() <= rel::kMaxSigLines);
    check(sf.payload.size() <= rel::kMaxPayload);
    for (const rel::Bundle& b : sf.bundles)
      check(!b.signature.empty() && b.signature.size() <= rel::kMaxSignature);
    rel::Statement st;
    rel::parse_statement(sf.payload, &st, &msg);
  }
  rel::SignatureFile psf;
  if (rel::parse_signatures(data, size, rel::kPolicyPayloadType, &psf, &msg) == fwa::Status::ok) {
    check(!psf.bundles.empty() && psf.bundles.size() <= rel::kMaxSigLines);
    check(psf.payload.size() <= rel::kMaxPolicyPayload);
    check(psf.payload_type == rel::kPolicyPayloadType);
  }
  rel::RootKey root;
  if (size <= rel::kMaxString &&
      rel::parse_root_key(std::string_view(reinterpret_cast<const char*>(data), size), &root,
                          &msg) == fwa::Status::ok)
    check(fwa::digest_hex(fwa::sha256(root.spki_der.data(), root.spki_der.size())) ==
              root.keyid &&
          root.spki_der.size() == (root.algorithm == rel::Algorithm::ed25519 ? 44u : 91u));
  rel::Statement st;
  if (rel::parse_statement(std::string_view(reinterpret_cast<const char*>(data), size), &st,
                           &msg) == fwa::Status::ok)
    check(st.security_version >= 0 && st.security_version <= rel::kMaxVersion);

  std::string canon, again;
  if (rel::canonicalize_json(data, size, rel::kMaxPolicy, 8, rel::kMaxString, &canon, &msg) ==
      fwa::Status::ok) {
    check(rel::canonicalize_json(reinterpret_cast<const uint8_t*>(canon.data()), canon.size(),
                                 rel::kMaxPolicy, 8, rel::kMaxString, &again,
                                 &msg) == fwa::Status::ok);
    check(again == canon);
    fwa::json::Document doc;
    fwa::json::Limits lim;
    lim.max_depth = 8;
    check(doc.parse(reinterpret_cast<const uint8_t*>(canon.data()), canon.size(), lim, &msg) ==
          fwa::Status::ok);
  }
  rel::Policy policy;
  if (rel::parse_policy(data, size, &policy, &msg) == fwa::Status::ok) {
    check(!policy.required_roles.empty() && policy.required_roles.size() <= rel::kMaxRoles);
    check(policy.keys.size() <= rel::kMaxPolicyKeys);
    for (const rel::PolicyKey& k : policy.keys)
      check(fwa::digest_hex(fwa::sha256(k.spki_der.data(), k.spki_der.size())) == k.keyid);
  }
  std::vector<uint8_t> decoded;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (size <= 4096 && rel::base64_decode(text, &decoded)) check(encode64(decoded) == text);
  return 0;
}
