/* SPDX-License-Identifier: Apache-2.0 */
// Signed releases verified on the device (docs/releases.md; the shared design of issue 17).
//
// A release is an in-toto Statement (subject = the artifact's root digest, predicate = security
// version, RXSWIN, model-card digest, format version) in a DSSE envelope inside a Sigstore
// bundle v0.3, one bundle per signer, one canonical-JSON line per bundle in MODEL.fwa.sig. A
// trust policy (JSON) says which keys play which role, which are revoked, how many valid
// signers each role needs and the minimum security version. verify() runs after the artifact
// itself was verified, in this order, stopping at the first failure:
//   1. no crypto backend and no verification callback: no_crypto (never skipped);
//   2. the policy (policy_malformed, policy_unsatisfiable); with root keys, its signatures
//      (verify_policy_signatures: a signed policy, docs/releases.md §5); the signature file
//      (signature_malformed, cap_exceeded);
//   3. identical payloads and the statement (signature_malformed); subject digest, model-card
//      digest and format version against the artifact (subject_mismatch);
//   4. each bundle: a keyid outside the policy is ignored, a revoked one counted as revoked,
//      a trusted key's signature that does not verify is signature_invalid;
//   5. required roles met by distinct valid keys, else untrusted (revoked when the revoked
//      keys would have met it);
//   6. security_version < min_security_version: rollback;
//   7. the monotonic counter (counter_unavailable when it cannot be read, never 0);
//      security_version < counter: rollback.
// Every parser is strict and bounded (caps below); no exception escapes (out of memory is
// io_error, like the artifact reader).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "artifact/sha256.h"
#include "core/status.h"

namespace fwa {
class Artifact;

namespace release {

// Caps of the signature file and the policy.
constexpr size_t kMaxSigFile = size_t(1) << 20;
constexpr size_t kMaxSigLines = 16;
constexpr size_t kMaxSigLine = size_t(64) << 10;
constexpr size_t kMaxPayload = size_t(16) << 10;      // decoded DSSE payload: a statement
constexpr size_t kMaxPolicyPayload = size_t(32) << 10;  // ... a signed policy (64 keys fit)
constexpr size_t kMaxRootKeys = 16;
constexpr size_t kMaxSignature = 256;                 // decoded signature
constexpr size_t kMaxString = size_t(4) << 10;        // every other JSON string
constexpr size_t kMaxPolicy = size_t(1) << 20;
constexpr size_t kMaxPolicyKeys = 64;
constexpr size_t kMaxRevoked = 64;
constexpr size_t kMaxRoles = 16;
constexpr size_t kMaxRxswin = 128;
constexpr int64_t kMaxVersion = int64_t(1) << 53;

constexpr const char* kBundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json";
constexpr const char* kStatementPayloadType = "application/vnd.in-toto+json";
constexpr const char* kPolicyPayloadType = "application/vnd.fwassist.trust-policy+json";
constexpr const char* kStatementType = "https://in-toto.io/Statement/v1";
constexpr const char* kPredicateType = "https://fwassist.dev/release/v1";

enum class Algorithm : int32_t { ecdsa_p256_sha256 = 1, ed25519 = 2 };
const char* algorithm_name(Algorithm a);

// Strict standard base64 (RFC 4648 §4): padded, no whitespace, no other characters, the
// unused bits of the last symbol zero. False on any violation.
bool base64_decode(std::string_view in, std::vector<uint8_t>* out);

// DSSE pre-authentication encoding of (payloadType, payload): the bytes that are signed.
std::string pae(std::string_view payload_type, std::string_view payload);

// Rewrites a JSON document into canonical JSON (docs/artifact-format.md §3.1): whitespace
// allowed between tokens, any valid escape, keys sorted on output. Refused (malformed): a
// duplicate key, a non-integer or out-of-range number, invalid UTF-8, a lone surrogate,
// nesting deeper than max_depth, a string longer than max_string bytes; cap_exceeded when the
// input is longer than max_input. For hand-written policies.
Status canonicalize_json(const uint8_t* data, size_t n, size_t max_input, int max_depth,
                         size_t max_string, std::string* out, std::string* message);

struct PolicyKey {
  std::string keyid;             // 64 lowercase hex digits: sha256 of spki_der
  std::string role;
  Algorithm algorithm = Algorithm::ecdsa_p256_sha256;
  std::vector<uint8_t> spki_der;  // DER SubjectPublicKeyInfo
};

struct Policy {
  int64_t policy_version = 0;
  std::vector<PolicyKey> keys;
  std::vector<std::string> revoked_keyids;
  std::vector<std::pair<std::string, int64_t>> required_roles;  // sorted by role
  int64_t min_security_version = 0;
  const PolicyKey* find_key(std::string_view keyid) const;
  bool revoked(std::string_view keyid) const;
};

// policy_malformed (any rule of the format; a keyid that is not its key's digest) or
// policy_unsatisfiable (a required role its own non-revoked keys cannot meet).
Status parse_policy(const uint8_t* data, size_t n, Policy* out, std::string* message);

struct Bundle {
  std::string keyid;
  std::vector<uint8_t> signature;
};

struct SignatureFile {
  std::string payload_type;
  std::string payload;  // decoded; byte-identical on every line
  std::vector<Bundle> bundles;
};

// signature_malformed or cap_exceeded. expected_payload_type: kStatementPayloadType for a
// release (payload <= kMaxPayload), kPolicyPayloadType for a signed policy (<= kMaxPolicyPayload).
Status parse_signatures(const uint8_t* data, size_t n, std::string_view expected_payload_type,
                        SignatureFile* out, std::string* message);

struct Statement {
  Sha256Digest subject{};
  std::string subject_name;
  Sha256Digest model_card{};
  int64_t format_major = 0, format_minor = 0;
  std::optional<std::string> rxswin;
  int64_t security_version = 0;
};

// signature_malformed.
Status parse_statement(std::string_view payload, Statement* out, std::string* message);

// An external verifier (an HSM, the integrator's crypto): 1 valid, 0 invalid, anything else
// a failure of the verifier itself.
using VerifyFn = int (*)(void* ctx, int32_t algorithm, const uint8_t* spki_der, size_t spki_len,
                         const uint8_t* message, size_t message_len, const uint8_t* signature,
                         size_t signature_len);
// The monotonic counter: 0 on success, anything else unreadable / not advanced.
using CounterReadFn = int (*)(void* ctx, uint64_t* value);
using CounterAdvanceFn = int (*)(void* ctx, uint64_t value);

struct Counter {
  std::optional<std::string> path;  // the file store, or
  CounterReadFn read = nullptr;     // the integrator's callbacks
  CounterAdvanceFn advance = nullptr;
  void* ctx = nullptr;
};

// A root key provisioned on the device to check signed policies.
struct RootKey {
  std::string keyid;  // sha256 of spki_der, lowercase hex
  Algorithm algorithm = Algorithm::ecdsa_p256_sha256;
  std::vector<uint8_t> spki_der;
};

// The PEM SubjectPublicKeyInfo of a P-256 or Ed25519 key (the policy's strict PEM form):
// invalid_argument otherwise (the integrator's configuration, not an attacker's input).
Status parse_root_key(std::string_view pem, RootKey* out, std::string* message);

struct TrustInputs {
  const uint8_t* policy = nullptr;
  size_t policy_size = 0;
  const uint8_t* signatures = nullptr;
  size_t signatures_size = 0;
  Counter counter;
  VerifyFn verify = nullptr;  // null: the built-in crypto (no_crypto in a build without it)
  void* verify_ctx = nullptr;
  // A signed policy (docs/releases.md §5). No root keys: the policy is trusted as given (and
  // policy_signatures must be null). Root keys: the policy is refused unless policy_signatures
  // (its policy.json.sig) holds valid signatures of root_threshold distinct root keys over its
  // exact bytes and its policy_version is not below policy_counter (the stored one).
  std::vector<std::string_view> root_keys;  // PEM, at most kMaxRootKeys
  int64_t root_threshold = 1;
  const uint8_t* policy_signatures = nullptr;
  size_t policy_signatures_size = 0;
  Counter policy_counter;
};

struct SignerVerdict {
  std::string keyid;
  std::string role;     // "" when the key is not in the policy
  Status status;        // ok (verified), untrusted (not in the policy), revoked
};

// The per-signer word of the verdict, one vocabulary with the reference verifier
// (fwassist.release.SignerVerdict): "valid" (ok), "revoked", "untrusted"; "invalid" for a
// signature that does not verify (the core refuses at once: signature_invalid).
const char* signer_status_word(Status s);

struct Verdict {
  Sha256Digest subject{};
  int64_t security_version = 0;
  std::optional<std::string> rxswin;
  int64_t policy_version = 0;
  uint64_t counter = 0;
  std::vector<SignerVerdict> signers;
  bool policy_signed = false;   // the policy's signatures were verified against root keys
  uint64_t policy_counter = 0;  // then: the stored policy version read
  int64_t policy_root_signers = 0;  // then: distinct root keys whose signature verified
};

// True when this build has a crypto backend (OpenSSL libcrypto).
bool have_crypto();

// Verifies one signature with the built-in backend: 1 valid, 0 invalid, -1 no backend.
int crypto_verify(Algorithm alg, const uint8_t* spki, size_t spki_len, const uint8_t* msg,
                  size_t msg_len, const uint8_t* sig, size_t sig_len);

// The root keys of `in`, distinct, checked with the threshold (before the policy is parsed, as
// the reference checks its arguments first): invalid_argument when a key is not a P-256 or
// Ed25519 PEM public key, there are more than kMaxRootKeys, or the threshold is outside
// 1..the distinct keys.
Status parse_root_keys(const TrustInputs& in, std::vector<RootKey>* roots, std::string* message);

// The signed-policy part of step 2, on the policy `policy` parsed from in.policy and the
// `roots` of parse_root_keys, in the reference's order (fwassist.release.verify_policy):
// cap_exceeded (the policy over kMaxPolicyPayload), signature_malformed / cap_exceeded (the
// policy's signature file; none at all is signature_malformed), subject_mismatch (signatures
// over other bytes), signature_invalid (a root key's signature does not verify; other keys
// are ignored), untrusted (fewer than root_threshold valid root signatures),
// counter_unavailable (the policy counter), rollback (policy_version below it).
Status verify_policy_signatures(const TrustInputs& in, const std::vector<RootKey>& roots,
                                const Policy& policy, Verdict* out, std::string* message);

// Steps 1-7 above against an artifact already opened and verified.
Status verify(const Artifact& artifact, const TrustInputs& in, Verdict* out,
              std::string* message);

// The file counter store: the decimal value and "\n" only. read: counter_unavailable when the
// file is missing or holds anything else. init: creates it (invalid_argument when it exists).
// advance: raises it to value (temp file, fsync, rename, fsync of the directory); never lowers
// it (rollback); equal is a no-op.
Status file_counter_read(const std::string& path, uint64_t* value, std::string* message);
Status file_counter_init(const std::string& path, uint64_t value, std::string* message);
Status file_counter_advance(const std::string& path, uint64_t value, std::string* message);

Status counter_read(const Counter& c, uint64_t* value, std::string* message);
// Raises the counter to security_version (never lowers it; equal is a no-op).
Status counter_commit(const Counter& c, uint64_t security_version, std::string* message);

}  // namespace release
}  // namespace fwa
