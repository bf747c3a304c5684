// SPDX-License-Identifier: Apache-2.0
// Signed releases (csrc/release): strict base64 and JSON, the parsers' refusals, and every
// verification status on the real test artifact (FWA_TEST_MODEL), with releases signed here by
// a small independent signer on OpenSSL (keys made per run, P-256 and Ed25519).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "artifact/json.h"
#include "artifact/reader.h"
#include "release/release.h"

#ifdef FWA_HAVE_OPENSSL
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#endif

namespace rel = fwa::release;
using fwa::Status;

namespace {

std::vector<uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }

Status policy_status(const std::string& text) {
  rel::Policy p;
  std::string msg;
  return rel::parse_policy(reinterpret_cast<const uint8_t*>(text.data()), text.size(), &p, &msg);
}

std::string canon(const std::string& text, Status* st = nullptr) {
  std::string out, msg;
  const Status s = rel::canonicalize_json(reinterpret_cast<const uint8_t*>(text.data()),
                                          text.size(), 1 << 20, 8, 4096, &out, &msg);
  if (st) *st = s;
  return out;
}

}  // namespace

TEST_CASE("base64: strict standard alphabet, padding, no whitespace, zero unused bits") {
  std::vector<uint8_t> out;
  CHECK(rel::base64_decode("", &out));
  CHECK(out.empty());
  REQUIRE(rel::base64_decode("Zm9vYmFy", &out));
  CHECK(std::string(out.begin(), out.end()) == "foobar");
  REQUIRE(rel::base64_decode("Zm9vYg==", &out));
  CHECK(std::string(out.begin(), out.end()) == "foob");
  REQUIRE(rel::base64_decode("Zm9vYmE=", &out));
  CHECK(std::string(out.begin(), out.end()) == "fooba");
  CHECK_FALSE(rel::base64_decode("Zm9vYg", &out));      // no padding
  CHECK_FALSE(rel::base64_decode("Zm9v\nYmFy", &out));  // whitespace
  CHECK_FALSE(rel::base64_decode("Zm9vYh==", &out));    // unused bits set
  CHECK_FALSE(rel::base64_decode("Zm9vYmF=", &out));
  CHECK_FALSE(rel::base64_decode("Zm9v-_==", &out));    // URL alphabet
  CHECK_FALSE(rel::base64_decode("Zg==Zm9v", &out));    // padding inside
  CHECK_FALSE(rel::base64_decode("Z===", &out));
}

TEST_CASE("DSSE PAE") {
  CHECK(rel::pae("application/vnd.in-toto+json", "{}") ==
        "DSSEv1 28 application/vnd.in-toto+json 2 {}");
  CHECK(rel::pae("", "") == "DSSEv1 0  0 ");
}

TEST_CASE("canonicalize_json: hand-written JSON to the canonical form, strictly") {
  Status st;
  CHECK(canon(" { \"b\" : [1, 2] ,\n \"a\": \"\\u00e9\\/\\n\\u0001\" } ", &st) ==
        "{\"a\":\"\xc3\xa9/\\n\\u0001\",\"b\":[1,2]}");
  CHECK(st == Status::ok);
  CHECK(canon("\"\\ud83d\\ude00\"", &st) == "\"\xf0\x9f\x98\x80\"");
  canon("{\"a\":1,\"a\":2}", &st);
  CHECK(st == Status::malformed);  // duplicate key
  canon("{\"a\":1,\"\\u0061\":2}", &st);
  CHECK(st == Status::malformed);  // duplicate after unescaping
  canon("1.5", &st);
  CHECK(st == Status::malformed);
  canon("9007199254740993", &st);
  CHECK(st == Status::malformed);
  canon("\"\\ud800\"", &st);
  CHECK(st == Status::malformed);  // lone surrogate
  canon("[[[[[[[[[1]]]]]]]]]", &st);
  CHECK(st == Status::malformed);  // deeper than 8
  canon("{} x", &st);
  CHECK(st == Status::malformed);
  canon("\"\xff\"", &st);
  CHECK(st == Status::malformed);
  canon("01", &st);
  CHECK(st == Status::malformed);
}

TEST_CASE("file counter store: init, read, advance, never lower, unreadable") {
  char dir[] = "/tmp/fwa_counter_XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/counter";
  uint64_t v = 99;
  std::string msg;
  CHECK(rel::file_counter_read(path, &v, &msg) == Status::counter_unavailable);  // missing
  CHECK(v == 99);
  REQUIRE(rel::file_counter_init(path, 3, &msg) == Status::ok);
  CHECK(rel::file_counter_init(path, 5, &msg) == Status::invalid_argument);  // exists
  REQUIRE(rel::file_counter_read(path, &v, &msg) == Status::ok);
  CHECK(v == 3);
  CHECK(rel::file_counter_advance(path, 2, &msg) == Status::rollback);
  CHECK(rel::file_counter_advance(path, 3, &msg) == Status::ok);
  REQUIRE(rel::file_counter_advance(path, 7, &msg) == Status::ok);
  REQUIRE(rel::file_counter_read(path, &v, &msg) == Status::ok);
  CHECK(v == 7);
  for (const char* bad : {"", "7", "07\n", "7\n\n", " 7\n", "-1\n", "x\n", "9007199254740993\n"}) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bad;
    CHECK_MESSAGE(rel::file_counter_read(path, &v, &msg) == Status::counter_unavailable, bad);
  }
  std::remove(path.c_str());
  rmdir(dir);
}

#ifdef FWA_HAVE_OPENSSL

namespace {

std::string b64(const std::string& s) {
  std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&out[0]),
                                reinterpret_cast<const unsigned char*>(s.data()), int(s.size()));
  out.resize(size_t(n));
  return out;
}

// A key made for this run: its SPKI DER, PEM and keyid, and a DSSE signer.
struct Key {
  std::shared_ptr<EVP_PKEY> pkey;
  bool ed25519 = false;
  std::string der, pem, keyid;

  static Key make(bool ed) {
    Key k;
    k.ed25519 = ed;
    EVP_PKEY* p = ed ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                     : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    REQUIRE(p != nullptr);
    k.pkey.reset(p, EVP_PKEY_free);
    unsigned char* der = nullptr;
    const int n = i2d_PUBKEY(p, &der);
    REQUIRE(n > 0);
    k.der.assign(reinterpret_cast<char*>(der), size_t(n));
    OPENSSL_free(der);
    BIO* bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(bio, p);
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    k.pem.assign(data, size_t(len));
    BIO_free(bio);
    k.keyid = fwa::digest_hex(fwa::sha256(k.der.data(), k.der.size()));
    return k;
  }

  std::string sign(const std::string& msg) const {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    REQUIRE(EVP_DigestSignInit(ctx, nullptr, ed25519 ? nullptr : EVP_sha256(), nullptr,
                               pkey.get()) == 1);
    size_t n = 0;
    REQUIRE(EVP_DigestSign(ctx, nullptr, &n, reinterpret_cast<const unsigned char*>(msg.data()),
                           msg.size()) == 1);
    std::string sig(n, '\0');
    REQUIRE(EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(&sig[0]), &n,
                           reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) == 1);
    sig.resize(n);
    EVP_MD_CTX_free(ctx);
    return sig;
  }
};

std::string json_str(const std::string& s) {  // the test's strings need no escapes
  return "\"" + s + "\"";
}

struct Fixture {
  std::unique_ptr<fwa::Artifact> artifact;
  std::string root_hex, card_hex;
  Key supplier = Key::make(false), oem = Key::make(true), other = Key::make(false),
      supplier2 = Key::make(true);
  std::string dir, counter_path;

  Fixture() {
    const char* path = std::getenv("FWA_TEST_MODEL");
    REQUIRE_MESSAGE(path != nullptr, "set FWA_TEST_MODEL (tests/cross/make_test_model.py)");
    std::string msg;
    REQUIRE(fwa::Artifact::open_file(path, fwa::OpenOptions(), &artifact, &msg) == Status::ok);
    root_hex = fwa::digest_hex(artifact->root_digest());
    fwa::json::Document doc;
    REQUIRE(doc.parse(artifact->manifest_data(), artifact->manifest_size(), fwa::json::Limits(),
                      &msg) == Status::ok);
    REQUIRE(doc.root().find("sections").find("model_card").get_string(&card_hex));
    char d[] = "/tmp/fwa_release_XXXXXX";
    REQUIRE(mkdtemp(d) != nullptr);
    dir = d;
    counter_path = dir + "/counter";
    REQUIRE(rel::file_counter_init(counter_path, 2, &msg) == Status::ok);
  }
  ~Fixture() {
    std::remove(counter_path.c_str());
    rmdir(dir.c_str());
  }

  std::string statement(int64_t sv, const std::string& subject = "",
                        const std::string& card = "", const std::string& fmt = "[1,0]",
                        const std::string& rxswin = "\"RXSWIN-ECU7-0042\"") const {
    return "{\"_type\":\"https://in-toto.io/Statement/v1\",\"predicate\":{\"artifact_format\":" +
           fmt + ",\"model_card_sha256\":" + json_str(card.empty() ? card_hex : card) +
           ",\"rxswin\":" + rxswin + ",\"security_version\":" + std::to_string(sv) +
           "},\"predicateType\":\"https://fwassist.dev/release/v1\",\"subject\":[{\"digest\":"
           "{\"sha256\":" + json_str(subject.empty() ? root_hex : subject) +
           "},\"name\":\"model.fwa\"}]}";
  }

  static std::string bundle(const std::string& payload, const std::string& keyid,
                            const std::string& sig) {
    return "{\"dsseEnvelope\":{\"payload\":" + json_str(b64(payload)) +
           ",\"payloadType\":\"application/vnd.in-toto+json\",\"signatures\":[{\"keyid\":" +
           json_str(keyid) + ",\"sig\":" + json_str(b64(sig)) +
           "}]},\"mediaType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\","
           "\"verificationMaterial\":{\"publicKey\":{\"hint\":" + json_str(keyid) +
           "},\"tlogEntries\":[]}}";
  }

  static std::string sign_line(const std::string& payload, const Key& k) {
    return bundle(payload, k.keyid,
                  k.sign(rel::pae("application/vnd.in-toto+json", payload))) + "\n";
  }

  static std::string key_entry(const Key& k, const std::string& role) {
    std::string pem;
    for (const char c : k.pem) pem += c == '\n' ? std::string("\\n") : std::string(1, c);
    return "{\"keyid\":" + json_str(k.keyid) + ",\"role\":" + json_str(role) +
           ",\"algorithm\":" + json_str(k.ed25519 ? "ed25519" : "ecdsa-p256-sha256") +
           ",\"public_key\":" + json_str(pem) + "}";
  }

  // supplier (P-256) + oem (Ed25519) required, written by hand (spaces, unsorted keys).
  std::string policy(const std::string& revoked = "", int64_t min_sv = 1,
                     const std::string& roles = "{\"supplier\": 1, \"oem\": 1}") const {
    return "{\n  \"format\": \"fwassist.trust-policy\",\n  \"format_version\": [1, 0],\n"
           "  \"policy_version\": 3,\n  \"keys\": [" + key_entry(supplier, "supplier") + ", " +
           key_entry(oem, "oem") + ", " + key_entry(supplier2, "supplier") +
           "],\n  \"revoked_keyids\": [" + revoked + "],\n  \"required_roles\": " + roles +
           ",\n  \"min_security_version\": " + std::to_string(min_sv) + "\n}\n";
  }

  Status verify(const std::string& pol, const std::string& sigs, rel::Verdict* v,
                std::string* msg, rel::VerifyFn fn = nullptr, void* ctx = nullptr) const {
    rel::TrustInputs in;
    in.policy = reinterpret_cast<const uint8_t*>(pol.data());
    in.policy_size = pol.size();
    in.signatures = reinterpret_cast<const uint8_t*>(sigs.data());
    in.signatures_size = sigs.size();
    in.counter.path = counter_path;
    in.verify = fn;
    in.verify_ctx = ctx;
    return rel::verify(*artifact, in, v, msg);
  }
  Status verify(const std::string& pol, const std::string& sigs, std::string* msg = nullptr) const {
    rel::Verdict v;
    std::string m;
    return verify(pol, sigs, &v, msg ? msg : &m);
  }
};

}  // namespace

TEST_CASE("release: co-signed (P-256 supplier + Ed25519 oem) verifies; verdict") {
  Fixture f;
  const std::string st = f.statement(5);
  const std::string sigs = Fixture::sign_line(st, f.supplier) + Fixture::sign_line(st, f.oem);
  rel::Verdict v;
  std::string msg;
  REQUIRE_MESSAGE(f.verify(f.policy(), sigs, &v, &msg) == Status::ok, msg);
  CHECK(v.security_version == 5);
  CHECK(v.rxswin == std::string("RXSWIN-ECU7-0042"));
  CHECK(v.policy_version == 3);
  CHECK(v.counter == 2);
  REQUIRE(v.signers.size() == 2);
  CHECK(v.signers[0].role == "supplier");
  CHECK(v.signers[1].role == "oem");
  CHECK(v.signers[1].status == Status::ok);
  // Every line ends with "\n" (without the last one the file is truncated: the reference
  // verifier's rule); an untrusted extra signer is ignored.
  CHECK(f.verify(f.policy(), sigs.substr(0, sigs.size() - 1)) == Status::signature_malformed);
  CHECK(f.verify(f.policy(), sigs + Fixture::sign_line(st, f.other)) == Status::ok);
  CHECK(f.verify(f.policy(), Fixture::sign_line(f.statement(5, "", "", "[1,0]", "null"),
                                                f.supplier) +
                                 Fixture::sign_line(f.statement(5, "", "", "[1,0]", "null"),
                                                    f.oem)) == Status::ok);
}

TEST_CASE("release: policy_malformed and policy_unsatisfiable") {
  Fixture f;
  const std::string st = f.statement(5);
  const std::string sigs = Fixture::sign_line(st, f.supplier) + Fixture::sign_line(st, f.oem);
  std::string p = f.policy();
  CHECK(f.verify(p.substr(0, p.size() / 2), sigs) == Status::policy_malformed);
  CHECK(f.verify("{\"format\":\"fwassist.trust-policy\",\"format\":\"x\"}", sigs) ==
        Status::policy_malformed);
  std::string extra = p;
  extra.insert(extra.rfind('}'), ", \"comment\": 1");
  CHECK(f.verify(extra, sigs) == Status::policy_malformed);  // unknown key
  std::string wrong_id = p;
  wrong_id.replace(wrong_id.find(f.supplier.keyid), 64, f.other.keyid);
  std::string msg;
  CHECK(f.verify(wrong_id, sigs, &msg) == Status::policy_malformed);
  CHECK(msg.find("is not the SHA-256 of its public key") != std::string::npos);
  std::string wrong_alg = p;
  wrong_alg.replace(wrong_alg.find("\"ed25519\""), 9, "\"ecdsa-p256-sha256\"");
  CHECK(f.verify(wrong_alg, sigs) == Status::policy_malformed);
  CHECK(f.verify(f.policy("", -1), sigs) == Status::policy_malformed);
  CHECK(f.verify(f.policy("", 1, "{}"), sigs) == Status::policy_malformed);
  CHECK(f.verify(f.policy("", 1, "{\"supplier\": 0}"), sigs) == Status::policy_malformed);
  CHECK(policy_status("[]") == Status::policy_malformed);
  // Needs 3 suppliers, has 2; or the only oem key is revoked.
  CHECK(f.verify(f.policy("", 1, "{\"supplier\": 3}"), sigs, &msg) ==
        Status::policy_unsatisfiable);
  CHECK(msg.find("supplier") != std::string::npos);
  CHECK(f.verify(f.policy(json_str(f.oem.keyid)), sigs) == Status::policy_unsatisfiable);
}

TEST_CASE("release: signature_malformed and cap_exceeded") {
  Fixture f;
  const std::string st = f.statement(5);
  const std::string a = Fixture::sign_line(st, f.supplier), b = Fixture::sign_line(st, f.oem);
  const std::string p = f.policy();
  CHECK(f.verify(p, "") == Status::signature_malformed);
  CHECK(f.verify(p, a + "\n" + b) == Status::signature_malformed);             // empty line
  CHECK(f.verify(p, a.substr(0, a.size() / 2)) == Status::signature_malformed);  // truncated
  std::string spaced = a;
  spaced.insert(1, " ");
  CHECK(f.verify(p, spaced + b) == Status::signature_malformed);  // not canonical
  CHECK(f.verify(p, a + a) == Status::signature_malformed);       // a key signed twice
  // Payloads must be identical on every line.
  CHECK(f.verify(p, a + Fixture::sign_line(f.statement(6), f.oem)) ==
        Status::signature_malformed);
  // Non-strict base64 of the payload (a stray newline escape inside it).
  std::string bad = a;
  bad.insert(bad.find("\"payload\":\"") + 14, "\\n");
  CHECK(f.verify(p, bad) == Status::signature_malformed);
  // A payload that is not a string.
  std::string num = a;
  const size_t pp = num.find("\"payload\":\"") + 10;
  num.replace(pp, num.find('"', pp + 1) - pp + 1, "1");
  std::string why;
  CHECK(f.verify(p, num, &why) == Status::signature_malformed);
  CHECK(why.find("payload is not a string") != std::string::npos);
  // Two DSSE signatures in one bundle.
  std::string two = a;
  const size_t s0 = two.find("[{\"keyid\"");
  const size_t s1 = two.find("}]", s0);
  two.insert(s1 + 1, "," + two.substr(s0 + 1, s1 - s0));
  CHECK(f.verify(p, two) == Status::signature_malformed);
  // A statement that is not canonical, or has a second subject.
  std::string ws = st;
  ws.insert(1, " ");
  CHECK(f.verify(p, Fixture::sign_line(ws, f.supplier)) == Status::signature_malformed);
  std::string two_subj = st;
  const size_t sub = two_subj.find("[{\"digest\"");
  two_subj.insert(two_subj.size() - 2,
                  "," + two_subj.substr(sub + 1, two_subj.size() - 2 - sub - 1));
  CHECK(f.verify(p, Fixture::sign_line(two_subj, f.supplier)) == Status::signature_malformed);
  // Caps: 17 lines, a line over 64 KiB, a payload over 16 KiB.
  std::string many;
  for (int i = 0; i < 17; ++i) many += b;
  CHECK(f.verify(p, many) == Status::cap_exceeded);
  CHECK(f.verify(p, Fixture::sign_line(st + std::string(17000, ' '), f.supplier)) ==
        Status::cap_exceeded);
  CHECK(f.verify(p, std::string(70000, 'x') + "\n") == Status::cap_exceeded);
  CHECK(f.verify(p, std::string(70000, 'x')) == Status::signature_malformed);  // no final LF
}

TEST_CASE("release: subject_mismatch (another artifact, model card, format)") {
  Fixture f;
  const std::string p = f.policy();
  std::string other_root = f.root_hex;
  other_root[0] = other_root[0] == '0' ? '1' : '0';
  for (const std::string& st : {f.statement(5, other_root), f.statement(5, "", other_root),
                                f.statement(5, "", "", "[1,1]")}) {
    std::string msg;
    CHECK(f.verify(p, Fixture::sign_line(st, f.supplier) + Fixture::sign_line(st, f.oem), &msg) ==
          Status::subject_mismatch);
  }
}

TEST_CASE("release: signature_invalid, untrusted, revoked") {
  Fixture f;
  const std::string st = f.statement(5);
  const std::string p = f.policy();
  const std::string sup = Fixture::sign_line(st, f.supplier), oem = Fixture::sign_line(st, f.oem);
  // A trusted key's signature over other bytes: invalid, whatever the other lines say.
  const std::string forged = Fixture::bundle(
      st, f.oem.keyid, f.oem.sign(rel::pae("application/vnd.in-toto+json", st + " "))) + "\n";
  std::string msg;
  CHECK(f.verify(p, sup + forged, &msg) == Status::signature_invalid);
  CHECK(msg.find(f.oem.keyid) != std::string::npos);
  // An ECDSA signature that is not strict DER (a needless leading zero in r).
  std::string der = f.supplier.sign(rel::pae("application/vnd.in-toto+json", st));
  std::string loose = der;
  loose.insert(4, 1, '\0');
  loose[3] = char(loose[3] + 1);
  loose[1] = char(loose[1] + 1);
  CHECK(f.verify(p, Fixture::bundle(st, f.supplier.keyid, loose) + "\n" + oem) ==
        Status::signature_invalid);
  // The oem signature missing, or made by a key outside the policy: untrusted, naming the role.
  CHECK(f.verify(p, sup, &msg) == Status::untrusted);
  CHECK(msg.find("\"oem\"") != std::string::npos);
  CHECK(f.verify(p, sup + Fixture::sign_line(st, f.other)) == Status::untrusted);
  // A wrong-role key: two suppliers do not make an oem.
  CHECK(f.verify(p, sup + Fixture::sign_line(st, f.supplier2)) == Status::untrusted);
  // The revoked supplier key would have met the role: revoked; supplier2 still can.
  const std::string rp = f.policy(json_str(f.supplier.keyid));
  CHECK(f.verify(rp, sup + oem, &msg) == Status::revoked);
  CHECK(f.verify(rp, sup + oem + Fixture::sign_line(st, f.supplier2)) == Status::ok);
}

TEST_CASE("release: rollback against the policy and the counter; counter_unavailable") {
  Fixture f;
  auto signed_by_both = [&](int64_t sv) {
    const std::string st = f.statement(sv);
    return Fixture::sign_line(st, f.supplier) + Fixture::sign_line(st, f.oem);
  };
  std::string msg;
  CHECK(f.verify(f.policy("", 4), signed_by_both(3), &msg) == Status::rollback);
  CHECK(msg.find("min_security_version") != std::string::npos);
  CHECK(f.verify(f.policy(), signed_by_both(1), &msg) == Status::rollback);  // counter is 2
  CHECK(msg.find("counter") != std::string::npos);
  CHECK(f.verify(f.policy(), signed_by_both(2)) == Status::ok);  // equal is allowed
  // Commit 9: the replay of 5 is now refused; the counter never goes down.
  rel::Counter c;
  c.path = f.counter_path;
  REQUIRE(rel::counter_commit(c, 9, &msg) == Status::ok);
  CHECK(f.verify(f.policy(), signed_by_both(5)) == Status::rollback);
  CHECK(rel::counter_commit(c, 5, &msg) == Status::rollback);
  uint64_t v = 0;
  REQUIRE(rel::file_counter_read(f.counter_path, &v, &msg) == Status::ok);
  CHECK(v == 9);
  // No counter, a missing file, a failing callback: counter_unavailable, never 0.
  const std::string pol = f.policy(), sigs = signed_by_both(10);
  rel::TrustInputs in;
  in.policy = reinterpret_cast<const uint8_t*>(pol.data());
  in.policy_size = pol.size();
  in.signatures = reinterpret_cast<const uint8_t*>(sigs.data());
  in.signatures_size = sigs.size();
  rel::Verdict verdict;
  CHECK(rel::verify(*f.artifact, in, &verdict, &msg) == Status::counter_unavailable);
  in.counter.path = f.dir + "/missing";
  CHECK(rel::verify(*f.artifact, in, &verdict, &msg) == Status::counter_unavailable);
  in.counter.path.reset();
  in.counter.read = [](void*, uint64_t*) { return 5; };
  CHECK(rel::verify(*f.artifact, in, &verdict, &msg) == Status::counter_unavailable);
  uint64_t device = 10;
  in.counter.read = [](void* ctx, uint64_t* out) {
    *out = *static_cast<uint64_t*>(ctx);
    return 0;
  };
  in.counter.advance = [](void* ctx, uint64_t value) {
    *static_cast<uint64_t*>(ctx) = value;
    return 0;
  };
  in.counter.ctx = &device;
  CHECK(rel::verify(*f.artifact, in, &verdict, &msg) == Status::ok);
  device = 11;
  CHECK(rel::verify(*f.artifact, in, &verdict, &msg) == Status::rollback);
  device = 4;
  REQUIRE(rel::counter_commit(in.counter, 10, &msg) == Status::ok);
  CHECK(device == 10);
}

TEST_CASE("release: an external verifier (HSM callback) decides instead of OpenSSL") {
  Fixture f;
  const std::string st = f.statement(5);
  const std::string sigs = Fixture::sign_line(st, f.supplier) + Fixture::sign_line(st, f.oem);
  struct Calls {
    int n = 0;
    int answer = 1;
  } calls;
  auto fn = [](void* ctx, int32_t alg, const uint8_t* key, size_t key_len, const uint8_t* m,
               size_t m_len, const uint8_t* s, size_t s_len) {
    auto* c = static_cast<Calls*>(ctx);
    ++c->n;
    if (c->answer != 1) return c->answer;
    // A real check, through the built-in backend, proves the callback gets the right bytes.
    return rel::crypto_verify(rel::Algorithm(alg), key, key_len, m, m_len, s, s_len);
  };
  rel::Verdict v;
  std::string msg;
  CHECK(f.verify(f.policy(), sigs, &v, &msg, fn, &calls) == Status::ok);
  CHECK(calls.n == 2);
  calls.answer = 0;
  CHECK(f.verify(f.policy(), sigs, &v, &msg, fn, &calls) == Status::signature_invalid);
  calls.answer = -3;
  CHECK(f.verify(f.policy(), sigs, &v, &msg, fn, &calls) == Status::io_error);
}

TEST_CASE("release: a signed policy (root keys, threshold, tampering, cap, policy counter)") {
  Fixture f;
  const Key root = Key::make(false), root2 = Key::make(true), stranger = Key::make(false);
  const std::string pol = f.policy(), ptype = rel::kPolicyPayloadType;
  const auto policy_line = [&](const std::string& payload, const Key& k) {
    std::string line = Fixture::bundle(payload, k.keyid, k.sign(rel::pae(ptype, payload)));
    const std::string from = "application/vnd.in-toto+json";
    line.replace(line.find(from), from.size(), ptype);
    return line + "\n";
  };
  const std::string st = f.statement(5);
  const std::string sigs = Fixture::sign_line(st, f.supplier) + Fixture::sign_line(st, f.oem);
  const std::string psig = policy_line(pol, root) + policy_line(pol, root2);
  std::string stored_path = f.dir + "/policy-counter", msg;
  REQUIRE(rel::file_counter_init(stored_path, 3, &msg) == Status::ok);
  const auto run = [&](const std::string& p, const std::string* ps, int64_t threshold,
                       std::vector<std::string_view> roots, rel::Verdict* v) {
    rel::TrustInputs in;
    in.policy = reinterpret_cast<const uint8_t*>(p.data());
    in.policy_size = p.size();
    in.signatures = reinterpret_cast<const uint8_t*>(sigs.data());
    in.signatures_size = sigs.size();
    in.counter.path = f.counter_path;
    in.root_keys = std::move(roots);
    in.root_threshold = threshold;
    if (ps) {
      in.policy_signatures = reinterpret_cast<const uint8_t*>(ps->data());
      in.policy_signatures_size = ps->size();
    }
    in.policy_counter.path = stored_path;
    return rel::verify(*f.artifact, in, v, &msg);
  };
  const std::vector<std::string_view> both = {root.pem, root2.pem};
  rel::Verdict v;
  REQUIRE_MESSAGE(run(pol, &psig, 2, both, &v) == Status::ok, msg);
  CHECK((v.policy_signed && v.policy_counter == 3 && v.policy_root_signers == 2));
  CHECK(run(pol, nullptr, 1, both, &v) == Status::signature_malformed);  // unsigned
  CHECK(run(f.policy("", 2), &psig, 1, both, &v) == Status::subject_mismatch);  // edited
  CHECK(run(pol, &sigs, 1, both, &v) == Status::signature_malformed);  // a release's .sig
  const std::string one_root = policy_line(pol, root);
  std::string bad = Fixture::bundle(pol, root.keyid, root.sign("other bytes"));
  bad.replace(bad.find("application/vnd.in-toto+json"), 28, ptype);
  CHECK(run(pol, &(bad += "\n"), 1, both, &v) == Status::signature_invalid);
  const std::string by_stranger = policy_line(pol, stranger);
  CHECK(run(pol, &by_stranger, 1, both, &v) == Status::untrusted);
  CHECK(run(pol, &one_root, 2, both, &v) == Status::untrusted);  // one root of two
  CHECK(run(pol, &psig, 3, both, &v) == Status::invalid_argument);
  CHECK(run(pol, &psig, 1, {std::string_view("-----BEGIN PUBLIC KEY-----\n")}, &v) ==
        Status::invalid_argument);
  // policy_version 3 = the stored one; a stored 4 makes it a replayed older policy.
  REQUIRE(rel::file_counter_advance(stored_path, 4, &msg) == Status::ok);
  CHECK(run(pol, &psig, 1, both, &v) == Status::rollback);
  std::remove(stored_path.c_str());
  CHECK(run(pol, &psig, 1, both, &v) == Status::counter_unavailable);
  // Policy signatures without root keys to check them: the caller's mistake.
  CHECK(run(pol, &psig, 1, {}, &v) == Status::invalid_argument);
  // The payload cap: 32 KiB for a policy (a hand-written one with 20 KiB of spaces fits), 16 KiB
  // for a release statement.
  const std::string big = pol.substr(0, pol.size() - 2) + std::string(20000, ' ') + "}\n";
  const std::string big_sig = policy_line(big, root);
  rel::SignatureFile sf;
  CHECK(rel::parse_signatures(reinterpret_cast<const uint8_t*>(big_sig.data()), big_sig.size(),
                              rel::kPolicyPayloadType, &sf, &msg) == Status::ok);
  const std::string big_st = Fixture::sign_line(big, root);
  CHECK(rel::parse_signatures(reinterpret_cast<const uint8_t*>(big_st.data()), big_st.size(),
                              rel::kStatementPayloadType, &sf, &msg) == Status::cap_exceeded);
  const std::string huge = pol.substr(0, pol.size() - 2) + std::string(40000, ' ') + "}\n";
  CHECK(run(huge, &psig, 1, both, &v) == Status::cap_exceeded);
}

#else

TEST_CASE("release: a build without crypto refuses every trust policy (no_crypto)") {
  const char* path = std::getenv("FWA_TEST_MODEL");
  REQUIRE_MESSAGE(path != nullptr, "set FWA_TEST_MODEL (tests/cross/make_test_model.py)");
  std::unique_ptr<fwa::Artifact> a;
  std::string msg;
  REQUIRE(fwa::Artifact::open_file(path, fwa::OpenOptions(), &a, &msg) == Status::ok);
  CHECK_FALSE(rel::have_crypto());
  const std::string pol = "{}", sigs = "";
  rel::TrustInputs in;
  in.policy = reinterpret_cast<const uint8_t*>(pol.data());
  in.policy_size = pol.size();
  in.signatures = reinterpret_cast<const uint8_t*>(sigs.data());
  rel::Verdict v;
  CHECK(rel::verify(*a, in, &v, &msg) == Status::no_crypto);
  // A signed policy too: the root signatures cannot be checked either.
  in.root_keys = {std::string_view("-----BEGIN PUBLIC KEY-----\n")};
  CHECK(rel::verify(*a, in, &v, &msg) == Status::no_crypto);
}

#endif
