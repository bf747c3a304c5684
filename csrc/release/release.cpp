// SPDX-License-Identifier: Apache-2.0
// Parsers of the signature file, the statement and the trust policy, and the verification
// order of release.h.
#include "release/release.h"

#include <algorithm>
#include <cstring>
#include <new>

#include "artifact/json.h"
#include "artifact/reader.h"

namespace fwa {
namespace release {
namespace {

using json::Type;
using json::Value;

bool is_hex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (const char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// The object's keys are exactly `keys` (sorted, as canonical JSON orders them).
bool has_exact_keys(const Value& obj, std::initializer_list<const char*> keys) {
  if (!obj.is(Type::object) || obj.size() != keys.size()) return false;
  Value v = obj.first();
  for (const char* k : keys) {
    if (!v.valid() || !v.key().string_equals(k)) return false;
    v = v.next();
  }
  return true;
}

// No string (key or value) in v's subtree longer than cap bytes, except the value at offset
// `skip` (the DSSE payload, capped on its own).
bool strings_within(const Value& v, size_t cap, size_t skip) {
  if (v.is(Type::string)) {
    std::string s;
    return v.offset() == skip || (v.get_string(&s) && s.size() <= cap);
  }
  if (!v.is(Type::array) && !v.is(Type::object)) return true;
  for (Value c = v.first(); c.valid(); c = c.next()) {
    if (v.is(Type::object) && !strings_within(c.key(), cap, skip)) return false;
    if (!strings_within(c, cap, skip)) return false;
  }
  return true;
}

// A string member of at most `cap` bytes.
bool get_str(const Value& v, std::string* out, size_t cap = kMaxString) {
  return v.get_string(out) && out->size() <= cap;
}

bool get_int_in(const Value& v, int64_t lo, int64_t hi, int64_t* out) {
  return v.get_int(out) && *out >= lo && *out <= hi;
}

// PEM "PUBLIC KEY" (RFC 7468 strict: base64 lines of at most 64 characters, LF line ends) to
// DER.
bool pem_to_der(const std::string& pem, std::vector<uint8_t>* der) {
  static const std::string head = "-----BEGIN PUBLIC KEY-----\n";
  static const std::string tail = "-----END PUBLIC KEY-----";
  if (pem.compare(0, head.size(), head) != 0) return false;
  size_t end = pem.size();
  if (end && pem[end - 1] == '\n') --end;
  if (end < head.size() + tail.size() || pem.compare(end - tail.size(), tail.size(), tail) != 0)
    return false;
  std::string b64;
  size_t line = 0;
  for (size_t i = head.size(); i < end - tail.size(); ++i) {
    const char c = pem[i];
    if (c == '\n') {
      if (line == 0) return false;  // empty line
      line = 0;
      continue;
    }
    if (++line > 64) return false;
    b64.push_back(c);
  }
  if (line != 0) return false;  // the last base64 line must end with LF before the footer
  return base64_decode(b64, der) && !der->empty();
}

// The fixed DER prefixes of the two key types' SubjectPublicKeyInfo (P-256 uncompressed point,
// Ed25519): the policy accepts exactly these encodings.
const uint8_t kP256Prefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce,
                               0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
                               0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};
const uint8_t kEd25519Prefix[] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
                                  0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};

bool spki_matches(Algorithm alg, const std::vector<uint8_t>& der) {
  const uint8_t* prefix = alg == Algorithm::ed25519 ? kEd25519Prefix : kP256Prefix;
  const size_t plen = alg == Algorithm::ed25519 ? sizeof kEd25519Prefix : sizeof kP256Prefix;
  const size_t total = alg == Algorithm::ed25519 ? 44 : 91;
  return der.size() == total && std::memcmp(der.data(), prefix, plen) == 0;
}

Status pfail(std::string* message, const std::string& what) {
  if (message) *message = "trust policy: " + what;
  return Status::policy_malformed;
}

Status sfail(std::string* message, const std::string& what) {
  if (message) *message = "signature: " + what;
  return Status::signature_malformed;
}

}  // namespace

const char* signer_status_word(Status s) {
  switch (s) {
    case Status::ok: return "valid";
    case Status::revoked: return "revoked";
    case Status::untrusted: return "untrusted";
    default: return "invalid";
  }
}

const char* algorithm_name(Algorithm a) {
  return a == Algorithm::ed25519 ? "ed25519" : "ecdsa-p256-sha256";
}

const PolicyKey* Policy::find_key(std::string_view keyid) const {
  for (const PolicyKey& k : keys)
    if (k.keyid == keyid) return &k;
  return nullptr;
}

bool Policy::revoked(std::string_view keyid) const {
  return std::find(revoked_keyids.begin(), revoked_keyids.end(), keyid) != revoked_keyids.end();
}

Status parse_policy(const uint8_t* data, size_t n, Policy* out, std::string* message) {
  try {
    *out = Policy();
    std::string canon, err;
    const Status cst = canonicalize_json(data, n, kMaxPolicy, 8, kMaxString, &canon, &err);
    if (cst != Status::ok) return pfail(message, err);
    json::Document doc;
    json::Limits lim;
    lim.max_depth = 8;
    lim.max_string = kMaxString;
    if (doc.parse(reinterpret_cast<const uint8_t*>(canon.data()), canon.size(), lim, &err) !=
        Status::ok)
      return pfail(message, err);
    const Value root = doc.root();
    if (!has_exact_keys(root, {"format", "format_version", "keys", "min_security_version",
                               "policy_version", "required_roles", "revoked_keyids"}))
      return pfail(message,
                   "needs exactly the keys format, format_version, keys, "
                   "min_security_version, policy_version, required_roles, revoked_keyids");
    if (!root.find("format").string_equals("fwassist.trust-policy"))
      return pfail(message, "format is not \"fwassist.trust-policy\"");
    const Value fv = root.find("format_version");
    int64_t major = -1, minor = -1;
    if (!fv.is(Type::array) || fv.size() != 2 || !fv.first().get_int(&major) ||
        !fv.first().next().get_int(&minor) || major != 1 || minor != 0)
      return pfail(message, "format_version is not [1,0]");
    if (!get_int_in(root.find("policy_version"), 1, kMaxVersion, &out->policy_version))
      return pfail(message, "policy_version is not an integer in [1, 2^53]");
    if (!get_int_in(root.find("min_security_version"), 0, kMaxVersion,
                    &out->min_security_version))
      return pfail(message, "min_security_version is not an integer in [0, 2^53]");

    const Value keys = root.find("keys");
    if (!keys.is(Type::array) || keys.size() > kMaxPolicyKeys)
      return pfail(message, "keys is not an array of at most " + std::to_string(kMaxPolicyKeys));
    size_t i = 0;
    for (Value k = keys.first(); k.valid(); k = k.next(), ++i) {
      const std::string where = "keys[" + std::to_string(i) + "]";
      if (!has_exact_keys(k, {"algorithm", "keyid", "public_key", "role"}))
        return pfail(message, where + " needs exactly algorithm, keyid, public_key, role");
      PolicyKey pk;
      std::string alg, pem;
      if (!get_str(k.find("keyid"), &pk.keyid) || !is_hex64(pk.keyid))
        return pfail(message, where + ".keyid is not 64 lowercase hex digits");
      if (!get_str(k.find("role"), &pk.role, 64) || pk.role.empty())
        return pfail(message, where + ".role is not a string of 1..64 bytes");
      if (!get_str(k.find("algorithm"), &alg)) return pfail(message, where + ".algorithm");
      if (alg == "ecdsa-p256-sha256")
        pk.algorithm = Algorithm::ecdsa_p256_sha256;
      else if (alg == "ed25519")
        pk.algorithm = Algorithm::ed25519;
      else
        return pfail(message, where + ".algorithm \"" + alg +
                                  "\" is not \"ecdsa-p256-sha256\" or \"ed25519\"");
      if (!get_str(k.find("public_key"), &pem) || !pem_to_der(pem, &pk.spki_der))
        return pfail(message, where + ".public_key is not a PEM PUBLIC KEY");
      if (!spki_matches(pk.algorithm, pk.spki_der))
        return pfail(message, where + ".public_key is not an " + alg +
                                  " SubjectPublicKeyInfo");
      const std::string digest = digest_hex(sha256(pk.spki_der.data(), pk.spki_der.size()));
      if (digest != pk.keyid)
        return pfail(message, where + ".keyid " + pk.keyid +
                                  " is not the SHA-256 of its public key (" + digest + ")");
      if (out->find_key(pk.keyid)) return pfail(message, where + ": keyid listed twice");
      out->keys.push_back(std::move(pk));
    }

    const Value revoked = root.find("revoked_keyids");
    if (!revoked.is(Type::array) || revoked.size() > kMaxRevoked)
      return pfail(message,
                   "revoked_keyids is not an array of at most " + std::to_string(kMaxRevoked));
    for (Value r = revoked.first(); r.valid(); r = r.next()) {
      std::string id;
      if (!get_str(r, &id) || !is_hex64(id))
        return pfail(message, "revoked_keyids: an entry is not 64 lowercase hex digits");
      if (out->revoked(id)) return pfail(message, "revoked_keyids: " + id + " listed twice");
      out->revoked_keyids.push_back(std::move(id));
    }

    const Value roles = root.find("required_roles");
    if (!roles.is(Type::object) || roles.size() == 0 || roles.size() > kMaxRoles)
      return pfail(message, "required_roles is not an object of 1.." +
                                std::to_string(kMaxRoles) + " roles");
    for (Value r = roles.first(); r.valid(); r = r.next()) {
      std::string role;
      int64_t count = 0;
      if (!get_str(r.key(), &role, 64) || role.empty())
        return pfail(message, "required_roles: a role name is not 1..64 bytes");
      if (!get_int_in(r, 1, int64_t(kMaxPolicyKeys), &count))
        return pfail(message, "required_roles." + role + " is not an integer in [1, 64]");
      out->required_roles.emplace_back(role, count);
    }
    for (const auto& [role, count] : out->required_roles) {
      int64_t usable = 0;
      for (const PolicyKey& k : out->keys)
        if (k.role == role && !out->revoked(k.keyid)) ++usable;
      if (usable < count) {
        if (message)
          *message = "trust policy: role \"" + role + "\" needs " + std::to_string(count) +
                     " signer(s) but the policy has " + std::to_string(usable) +
                     " non-revoked key(s) for it";
        return Status::policy_unsatisfiable;
      }
    }
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "trust policy: out of memory";
    return Status::io_error;
  }
}

Status parse_root_key(std::string_view pem, RootKey* out, std::string* message) {
  try {
    *out = RootKey();
    const std::string text(pem);
    if (text.size() > kMaxString || !pem_to_der(text, &out->spki_der)) {
      if (message) *message = "root key: not a PEM PUBLIC KEY (the strict RFC 7468 form)";
      return Status::invalid_argument;
    }
    if (spki_matches(Algorithm::ecdsa_p256_sha256, out->spki_der)) {
      out->algorithm = Algorithm::ecdsa_p256_sha256;
    } else if (spki_matches(Algorithm::ed25519, out->spki_der)) {
      out->algorithm = Algorithm::ed25519;
    } else {
      if (message) *message = "root key: not a P-256 or Ed25519 SubjectPublicKeyInfo";
      return Status::invalid_argument;
    }
    out->keyid = digest_hex(sha256(out->spki_der.data(), out->spki_der.size()));
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "root key: out of memory";
    return Status::io_error;
  }
}

Status parse_signatures(const uint8_t* data, size_t n, std::string_view expected_payload_type,
                        SignatureFile* out, std::string* message) {
  try {
    *out = SignatureFile();
    const size_t max_payload =
        expected_payload_type == kPolicyPayloadType ? kMaxPolicyPayload : kMaxPayload;
    const size_t max_payload_b64 = (max_payload + 2) / 3 * 4;
    if (n > kMaxSigFile) {
      if (message)
        *message = "signature: file of " + std::to_string(n) + " bytes exceeds the cap of " +
                   std::to_string(kMaxSigFile);
      return Status::cap_exceeded;
    }
    if (n == 0) return sfail(message, "the file is empty (no bundle)");
    // Every line ends with "\n": a file without the final one is truncated (docs/releases.md).
    if (data[n - 1] != '\n')
      return sfail(message, "the last line has no final newline (truncated)");
    // Caps first, before any line is parsed: the number of lines and each line's length.
    {
      size_t lines = 0, start = 0;
      for (size_t i = 0; i <= n; ++i) {
        if (i < n && data[i] != '\n') continue;
        if (i == n && start == n) break;  // the final newline ends the last line
        if (++lines > kMaxSigLines) {
          if (message)
            *message = "signature: more than " + std::to_string(kMaxSigLines) + " bundles";
          return Status::cap_exceeded;
        }
        if (i - start > kMaxSigLine) {
          if (message)
            *message = "signature: line " + std::to_string(lines) + ": " +
                       std::to_string(i - start) + " bytes exceeds the cap of " +
                       std::to_string(kMaxSigLine);
          return Status::cap_exceeded;
        }
        start = i + 1;
      }
    }
    // JSON Lines: each line one bundle, "\n"-terminated, no empty line.
    size_t pos = 0, line_no = 0;
    std::string first_payload_b64;
    std::vector<std::string> payloads_b64;
    while (pos < n) {
      const void* nl = std::memchr(data + pos, '\n', n - pos);
      const size_t end = nl ? size_t(static_cast<const uint8_t*>(nl) - data) : n;
      const size_t len = end - pos;
      ++line_no;
      const std::string where = "line " + std::to_string(line_no) + ": ";
      if (len == 0) return sfail(message, where + "empty line");
      json::Document doc;
      json::Limits lim;
      lim.max_depth = 8;
      lim.max_string = max_payload_b64;  // the payload's base64; the others checked below
      std::string err;
      Status jst = doc.parse(data + pos, len, lim, &err);
      if (jst == Status::cap_exceeded) {
        // The reference verifier's order: the form and the structure first, then the caps
        // (a line is <= 64 KiB: parsing it again is cheap).
        lim.max_string = len;
        jst = doc.parse(data + pos, len, lim, &err);
      }
      if (jst != Status::ok) return sfail(message, where + "not canonical JSON: " + err);
      const Value root = doc.root();
      if (!has_exact_keys(root, {"dsseEnvelope", "mediaType", "verificationMaterial"}))
        return sfail(message,
                     where + "a bundle has exactly dsseEnvelope, mediaType, verificationMaterial");
      if (!has_exact_keys(root.find("dsseEnvelope"), {"payload", "payloadType", "signatures"}) ||
          !has_exact_keys(root.find("verificationMaterial"), {"publicKey", "tlogEntries"}) ||
          !has_exact_keys(root.find("verificationMaterial").find("publicKey"), {"hint"}))
        return sfail(message, where + "dsseEnvelope, verificationMaterial or publicKey does not "
                                      "have exactly its keys");
      const Value payload_value = root.find("dsseEnvelope").find("payload");
      if (!strings_within(root, kMaxString, payload_value.offset())) {
        if (message) *message = "signature: " + where + "a string longer than 4 KiB";
        return Status::cap_exceeded;
      }
      if (!root.find("mediaType").string_equals(kBundleMediaType))
        return sfail(message, where + "mediaType is not " + std::string(kBundleMediaType));
      const Value env = root.find("dsseEnvelope");
      if (!has_exact_keys(env, {"payload", "payloadType", "signatures"}))
        return sfail(message, where + "dsseEnvelope has exactly payload, payloadType, signatures");
      std::string payload_type, payload_b64, keyid, sig_b64, hint;
      if (!get_str(env.find("payloadType"), &payload_type))
        return sfail(message, where + "payloadType is not a string");
      if (payload_type != expected_payload_type)
        return sfail(message, where + "payloadType is \"" + payload_type + "\", expected \"" +
                                  std::string(expected_payload_type) + "\"");
      if (!env.find("payload").get_string(&payload_b64))
        return sfail(message, where + "payload is not a string");
      const Value sigs = env.find("signatures");
      if (!sigs.is(Type::array) || sigs.size() != 1)
        return sfail(message, where + "a bundle holds exactly one DSSE signature");
      const Value sig = sigs.first();
      if (!has_exact_keys(sig, {"keyid", "sig"}))
        return sfail(message, where + "a DSSE signature has exactly keyid and sig");
      if (!get_str(sig.find("keyid"), &keyid) || !is_hex64(keyid))
        return sfail(message, where + "keyid is not 64 lowercase hex digits");
      if (!sig.find("sig").get_string(&sig_b64))
        return sfail(message, where + "sig is not a string");
      const Value vm = root.find("verificationMaterial");
      if (!has_exact_keys(vm, {"publicKey", "tlogEntries"}))
        return sfail(message,
                     where + "verificationMaterial has exactly publicKey and tlogEntries");
      const Value tlog = vm.find("tlogEntries");
      if (!tlog.is(Type::array) || tlog.size() != 0)
        return sfail(message, where + "tlogEntries must be empty (offline keys)");
      if (!has_exact_keys(vm.find("publicKey"), {"hint"}) ||
          !get_str(vm.find("publicKey").find("hint"), &hint) || hint != keyid)
        return sfail(message, where + "publicKey.hint must equal the signature's keyid");
      // Every line's payload is decoded (caps and encoding), then compared with line 1's once
      // every line parsed, as the reference verifier does.
      if (payload_b64.size() > max_payload_b64) {
        if (message) *message = "signature: " + where + "payload longer than its cap";
        return Status::cap_exceeded;
      }
      std::vector<uint8_t> decoded;
      if (!base64_decode(payload_b64, &decoded))
        return sfail(message, where + "payload is not strict padded base64");
      if (decoded.size() > max_payload) {
        if (message)
          *message = "signature: " + where + "decoded payload exceeds " +
                     std::to_string(max_payload >> 10) + " KiB";
        return Status::cap_exceeded;
      }
      if (line_no == 1) {
        out->payload.assign(decoded.begin(), decoded.end());
        out->payload_type = payload_type;
        first_payload_b64 = payload_b64;
      }
      payloads_b64.push_back(std::move(payload_b64));
      Bundle b;
      b.keyid = keyid;
      if (sig_b64.size() > (kMaxSignature + 2) / 3 * 4) {
        if (message) *message = "signature: " + where + "sig longer than its cap";
        return Status::cap_exceeded;
      }
      if (!base64_decode(sig_b64, &b.signature) || b.signature.empty())
        return sfail(message, where + "sig is not strict padded base64");
      if (b.signature.size() > kMaxSignature) {
        if (message) *message = "signature: " + where + "decoded signature exceeds 256 bytes";
        return Status::cap_exceeded;
      }
      out->bundles.push_back(std::move(b));
      pos = nl ? end + 1 : n;
    }
    for (size_t i = 0; i < out->bundles.size(); ++i) {
      const std::string where = "line " + std::to_string(i + 1) + ": ";
      // One strict encoding per byte string: equal base64 text is equal payload bytes.
      if (payloads_b64[i] != first_payload_b64)
        return sfail(message, where + "its payload differs from line 1 (co-signers sign the "
                                      "same statement)");
      for (size_t j = 0; j < i; ++j)
        if (out->bundles[j].keyid == out->bundles[i].keyid)
          return sfail(message, where + "keyid " + out->bundles[i].keyid + " signed twice");
    }
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "signature: out of memory";
    return Status::io_error;
  }
}

Status parse_statement(std::string_view payload, Statement* out, std::string* message) {
  try {
    *out = Statement();
    json::Document doc;
    json::Limits lim;
    lim.max_depth = 8;
    lim.max_string = kMaxString;
    std::string err;
    const auto* bytes = reinterpret_cast<const uint8_t*>(payload.data());
    const Status pst = doc.parse(bytes, payload.size(), lim, &err);
    if (pst == Status::cap_exceeded) {
      // A long string is cap_exceeded only in otherwise canonical JSON (the reference
      // verifier's order: the form first, then the caps); the payload is <= 16 KiB.
      json::Document any;
      json::Limits uncapped = lim;
      uncapped.max_string = payload.size();
      std::string err2;
      if (any.parse(bytes, payload.size(), uncapped, &err2) != Status::ok)
        return sfail(message, "statement is not canonical JSON: " + err2);
      if (message) *message = "signature: statement: " + err;
      return Status::cap_exceeded;
    }
    if (pst != Status::ok) return sfail(message, "statement is not canonical JSON: " + err);
    const Value root = doc.root();
    if (!has_exact_keys(root, {"_type", "predicate", "predicateType", "subject"}))
      return sfail(message, "statement has exactly _type, predicate, predicateType, subject");
    if (!root.find("_type").string_equals(kStatementType))
      return sfail(message, "statement _type is not " + std::string(kStatementType));
    if (!root.find("predicateType").string_equals(kPredicateType))
      return sfail(message, "predicateType is not " + std::string(kPredicateType));
    const Value subj = root.find("subject");
    if (!subj.is(Type::array) || subj.size() != 1)
      return sfail(message, "statement needs exactly one subject");
    const Value s0 = subj.first();
    std::string hex;
    if (!has_exact_keys(s0, {"digest", "name"}) || !has_exact_keys(s0.find("digest"), {"sha256"}) ||
        !get_str(s0.find("digest").find("sha256"), &hex) || !is_hex64(hex) ||
        !parse_digest_hex(hex.data(), hex.size(), &out->subject) ||
        !get_str(s0.find("name"), &out->subject_name) || out->subject_name.empty())
      return sfail(message,
                   "subject is not {\"digest\":{\"sha256\":<64 hex>},\"name\":<non-empty string>}");
    const Value pred = root.find("predicate");
    if (!has_exact_keys(pred, {"artifact_format", "model_card_sha256", "rxswin",
                               "security_version"}))
      return sfail(message, "predicate has exactly artifact_format, model_card_sha256, rxswin, "
                            "security_version");
    const Value af = pred.find("artifact_format");
    if (!af.is(Type::array) || af.size() != 2 ||
        !get_int_in(af.first(), 0, 65535, &out->format_major) ||
        !get_int_in(af.first().next(), 0, 65535, &out->format_minor))
      return sfail(message, "artifact_format is not [major, minor]");
    if (!get_str(pred.find("model_card_sha256"), &hex) || !is_hex64(hex) ||
        !parse_digest_hex(hex.data(), hex.size(), &out->model_card))
      return sfail(message, "model_card_sha256 is not 64 lowercase hex digits");
    const Value rx = pred.find("rxswin");
    if (!rx.is(Type::null)) {
      std::string r;
      bool ok = get_str(rx, &r, kMaxRxswin) && !r.empty();
      for (const char c : r) ok = ok && c >= 0x20 && c <= 0x7e;
      if (!ok) return sfail(message, "rxswin is not null or 1..128 printable ASCII characters");
      out->rxswin = r;
    }
    if (!get_int_in(pred.find("security_version"), 0, kMaxVersion, &out->security_version))
      return sfail(message, "security_version is not an integer in [0, 2^53]");
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "statement: out of memory";
    return Status::io_error;
  }
}

Status counter_read(const Counter& c, uint64_t* value, std::string* message) {
  if (c.path) return file_counter_read(*c.path, value, message);
  if (!c.read) {
    if (message) *message = "counter: no monotonic counter was given (a path or a read callback)";
    return Status::counter_unavailable;
  }
  uint64_t v = 0;
  const int rc = c.read(c.ctx, &v);
  if (rc != 0) {
    if (message) *message = "counter: the read callback failed (returned " + std::to_string(rc) + ")";
    return Status::counter_unavailable;
  }
  *value = v;
  return Status::ok;
}

Status counter_commit(const Counter& c, uint64_t security_version, std::string* message) {
  if (c.path) return file_counter_advance(*c.path, security_version, message);
  uint64_t current = 0;
  Status st = counter_read(c, &current, message);
  if (st != Status::ok) return st;
  if (security_version < current) {
    if (message)
      *message = "counter: security_version " + std::to_string(security_version) +
                 " is below the counter (" + std::to_string(current) + "); it never decreases";
    return Status::rollback;
  }
  if (security_version == current) return Status::ok;
  if (!c.advance) {
    if (message) *message = "counter: no advance callback was given";
    return Status::invalid_argument;
  }
  const int rc = c.advance(c.ctx, security_version);
  if (rc != 0) {
    if (message)
      *message = "counter: the advance callback failed (returned " + std::to_string(rc) + ")";
    return Status::counter_unavailable;
  }
  return Status::ok;
}

namespace {

// One signature over `msg` by (alg, spki): the integrator's callback, else the built-in crypto.
// 1 valid, 0 invalid, anything else a failure of the verifier.
int check_one(const TrustInputs& in, Algorithm alg, const std::vector<uint8_t>& spki,
              const std::string& msg, const std::vector<uint8_t>& sig) {
  const auto* m = reinterpret_cast<const uint8_t*>(msg.data());
  return in.verify ? in.verify(in.verify_ctx, int32_t(alg), spki.data(), spki.size(), m,
                               msg.size(), sig.data(), sig.size())
                   : crypto_verify(alg, spki.data(), spki.size(), m, msg.size(), sig.data(),
                                   sig.size());
}

}  // namespace

Status parse_root_keys(const TrustInputs& in, std::vector<RootKey>* roots,
                       std::string* message) {
  try {
    roots->clear();
    if (in.root_keys.size() > kMaxRootKeys) {
      if (message)
        *message = "root keys: " + std::to_string(in.root_keys.size()) + " given, at most " +
                   std::to_string(kMaxRootKeys);
      return Status::invalid_argument;
    }
    for (size_t i = 0; i < in.root_keys.size(); ++i) {
      RootKey k;
      const Status st = parse_root_key(in.root_keys[i], &k, message);
      if (st != Status::ok) {
        if (message) *message = "root key " + std::to_string(i) + ": " + *message;
        return st;
      }
      bool seen = false;
      for (const RootKey& r : *roots) seen = seen || r.keyid == k.keyid;
      if (!seen) roots->push_back(std::move(k));
    }
    if (in.root_threshold < 1 || size_t(in.root_threshold) > roots->size()) {
      if (message)
        *message = "root keys: a threshold of " + std::to_string(in.root_threshold) +
                   " needs 1.." + std::to_string(roots->size()) + " (the distinct root keys)";
      return Status::invalid_argument;
    }
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "root keys: out of memory";
    return Status::io_error;
  }
}

Status verify_policy_signatures(const TrustInputs& in, const std::vector<RootKey>& roots,
                                const Policy& policy, Verdict* out, std::string* message) {
  try {
    if (in.policy_size > kMaxPolicyPayload) {
      if (message)
        *message = "trust policy: a signed policy is at most " +
                   std::to_string(kMaxPolicyPayload) + " bytes, this one " +
                   std::to_string(in.policy_size);
      return Status::cap_exceeded;
    }
    if (!in.policy_signatures) {
      if (message)
        *message = "policy signature: none given, but root keys are configured: an unsigned "
                   "trust policy is refused";
      return Status::signature_malformed;
    }
    SignatureFile sf;
    Status st = parse_signatures(in.policy_signatures, in.policy_signatures_size,
                                 kPolicyPayloadType, &sf, message);
    if (st != Status::ok) {
      if (message) *message = "policy " + *message;
      return st;
    }
    if (sf.payload.size() != in.policy_size ||
        std::memcmp(sf.payload.data(), in.policy, in.policy_size) != 0) {
      if (message) *message = "policy signature: the signatures sign other bytes than the policy";
      return Status::subject_mismatch;
    }
    const std::string signed_bytes = pae(sf.payload_type, sf.payload);
    int64_t valid = 0;
    for (size_t i = 0; i < sf.bundles.size(); ++i) {
      const Bundle& b = sf.bundles[i];
      const RootKey* root = nullptr;
      for (const RootKey& r : roots)
        if (r.keyid == b.keyid) root = &r;
      if (!root) continue;  // not a root key: ignored
      const int rc = check_one(in, root->algorithm, root->spki_der, signed_bytes, b.signature);
      if (rc == 0) {
        if (message)
          *message = "policy signature line " + std::to_string(i + 1) + ": the signature of "
                     "root key " + b.keyid + " (" + algorithm_name(root->algorithm) +
                     ") does not verify";
        return Status::signature_invalid;
      }
      if (rc != 1) {
        if (message)
          *message = "the verifier failed on root key " + b.keyid + " (returned " +
                     std::to_string(rc) + ")";
        return Status::io_error;
      }
      ++valid;
    }
    if (valid < in.root_threshold) {
      if (message)
        *message = "policy signature: " + std::to_string(valid) + " valid root signature(s), " +
                   std::to_string(in.root_threshold) + " needed";
      return Status::untrusted;
    }
    uint64_t stored = 0;
    st = counter_read(in.policy_counter, &stored, message);
    if (st != Status::ok) {
      if (message) *message = "policy " + *message;
      return st;
    }
    if (uint64_t(policy.policy_version) < stored) {
      if (message)
        *message = "policy_version " + std::to_string(policy.policy_version) +
                   " is below the device's stored policy version " + std::to_string(stored) +
                   " (a replayed older policy)";
      return Status::rollback;
    }
    out->policy_signed = true;
    out->policy_counter = stored;
    out->policy_root_signers = valid;
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "policy signature: out of memory";
    return Status::io_error;
  }
}

Status verify(const Artifact& artifact, const TrustInputs& in, Verdict* out,
              std::string* message) {
  try {
    *out = Verdict();
    // 1. No way to check a signature: refused, never skipped.
    if (!in.verify && !have_crypto()) {
      if (message)
        *message = "this build has no crypto backend (FWA_WITH_OPENSSL=OFF) and no verification "
                   "callback was given: a trust policy cannot be enforced";
      return Status::no_crypto;
    }
    // 2. The policy and the signature file.
    std::vector<RootKey> roots;
    if (!in.root_keys.empty()) {
      const Status rst = parse_root_keys(in, &roots, message);
      if (rst != Status::ok) return rst;
    } else if (in.policy_signatures) {
      if (message)
        *message = "policy signatures were given without root keys to check them";
      return Status::invalid_argument;
    }
    Policy policy;
    Status st = parse_policy(in.policy, in.policy_size, &policy, message);
    if (st != Status::ok) return st;
    if (!roots.empty()) {
      st = verify_policy_signatures(in, roots, policy, out, message);
      if (st != Status::ok) return st;
    }
    SignatureFile sf;
    st = parse_signatures(in.signatures, in.signatures_size, kStatementPayloadType, &sf, message);
    if (st != Status::ok) return st;
    // 3. The statement against the artifact (its root digest binds every byte: no second hash).
    Statement stmt;
    st = parse_statement(sf.payload, &stmt, message);
    if (st != Status::ok) return st;
    if (stmt.subject != artifact.root_digest()) {
      if (message)
        *message = "the signed statement is about sha256:" + digest_hex(stmt.subject) +
                   ", this artifact is " + artifact.pin();
      return Status::subject_mismatch;
    }
    json::Document manifest;
    std::string err;
    if (manifest.parse(artifact.manifest_data(), artifact.manifest_size(), json::Limits(), &err) !=
        Status::ok) {
      if (message) *message = "manifest: " + err;
      return Status::malformed;
    }
    Sha256Digest card{};
    std::string card_hex;
    if (!manifest.root().find("sections").find("model_card").get_string(&card_hex) ||
        !parse_digest_hex(card_hex.data(), card_hex.size(), &card)) {
      if (message) *message = "manifest: sections.model_card is missing";
      return Status::malformed;
    }
    if (stmt.model_card != card) {
      if (message)
        *message = "the signed model_card_sha256 " + digest_hex(stmt.model_card) +
                   " differs from the artifact's " + card_hex;
      return Status::subject_mismatch;
    }
    const uint8_t* header = artifact.source()->data();
    const int64_t major = header[8] | header[9] << 8, minor = header[10] | header[11] << 8;
    if (stmt.format_major != major || stmt.format_minor != minor) {
      if (message)
        *message = "the signed artifact_format [" + std::to_string(stmt.format_major) + "," +
                   std::to_string(stmt.format_minor) + "] differs from the artifact's [" +
                   std::to_string(major) + "," + std::to_string(minor) + "]";
      return Status::subject_mismatch;
    }
    out->subject = stmt.subject;
    out->security_version = stmt.security_version;
    out->rxswin = stmt.rxswin;
    out->policy_version = policy.policy_version;
    // 4. Each signer.
    const std::string signed_bytes = pae(sf.payload_type, sf.payload);
    for (const Bundle& b : sf.bundles) {
      SignerVerdict sv{b.keyid, "", Status::untrusted};
      const PolicyKey* key = policy.find_key(b.keyid);
      if (key) {
        sv.role = key->role;
        if (policy.revoked(b.keyid)) {
          sv.status = Status::revoked;
        } else {
          const int rc = check_one(in, key->algorithm, key->spki_der, signed_bytes, b.signature);
          if (rc == 0) {
            if (message)
              *message = "the signature of trusted key " + b.keyid + " (role \"" + key->role +
                         "\", " + algorithm_name(key->algorithm) + ") does not verify";
            return Status::signature_invalid;
          }
          if (rc != 1) {
            if (message)
              *message = "the verifier failed on key " + b.keyid + " (returned " +
                         std::to_string(rc) + ")";
            return Status::io_error;
          }
          sv.status = Status::ok;
        }
      } else if (policy.revoked(b.keyid)) {
        sv.status = Status::revoked;
      }
      out->signers.push_back(std::move(sv));
    }
    // 5. Threshold by roles.
    for (const auto& [role, needed] : policy.required_roles) {
      int64_t valid = 0, revoked = 0;
      for (const SignerVerdict& s : out->signers) {
        if (s.role != role) continue;
        if (s.status == Status::ok) ++valid;
        if (s.status == Status::revoked) ++revoked;
      }
      if (valid < needed) {
        const bool by_revoked = valid + revoked >= needed;
        if (message)
          *message = "role \"" + role + "\" needs " + std::to_string(needed) +
                     " valid signature(s) of trusted keys, found " + std::to_string(valid) +
                     (by_revoked ? " (the others come from revoked keys)" : "");
        return by_revoked ? Status::revoked : Status::untrusted;
      }
    }
    // 6. The policy's floor.
    if (stmt.security_version < policy.min_security_version) {
      if (message)
        *message = "security_version " + std::to_string(stmt.security_version) +
                   " is below the policy's min_security_version " +
                   std::to_string(policy.min_security_version);
      return Status::rollback;
    }
    // 7. The device's monotonic counter.
    uint64_t counter = 0;
    st = counter_read(in.counter, &counter, message);
    if (st != Status::ok) return st;
    out->counter = counter;
    if (uint64_t(stmt.security_version) < counter) {
      if (message)
        *message = "security_version " + std::to_string(stmt.security_version) +
                   " is below the device's counter " + std::to_string(counter) +
                   " (a replayed older release)";
      return Status::rollback;
    }
    return Status::ok;
  } catch (const std::bad_alloc&) {
    if (message) *message = "release verification: out of memory";
    return Status::io_error;
  }
}

}  // namespace release
}  // namespace fwa
