/* SPDX-License-Identifier: Apache-2.0 */
/* Signed releases through the C ABI alone (C99, the public header only): a co-signed release
 * opens, and the subject, threshold, revocation, signature, version floor, rollback and counter
 * refusals each give their status; the counter advances only through
 * fwa_model_commit_security_version, with callbacks (an RPMB-like counter) and the file store.
 * A signed policy (fwa_trust.root_keys): root signatures, threshold, tampering, an unsigned
 * policy and the policy counter's rollback refusal, and fwa_model_commit_policy_version.
 * The fixtures are made by tests/capi/make_release_fixtures.py for the same artifact.
 *
 * With the library's crypto (OpenSSL) the suite runs twice: signatures checked by the library,
 * then by a verification callback. A build without crypto (the aarch64 cross build, run under
 * qemu) must refuse the policy with FWA_ERR_NO_CRYPTO; the suite then runs with the callback,
 * which answers from hsm-table.txt (the signatures the fixture script found valid with
 * `cryptography`) like an HSM that holds these keys: the enforcement is the library's either way.
 *
 *   fwa_release_walk MODEL.fwa FIXTURE_DIR
 *   fwa_release_walk       (FWA_TEST_MODEL and FWA_RELEASE_FIXTURES, as ctest runs it) */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fwassist/fwassist.h"

static int failures = 0;
static int checks = 0;

#define EXPECT_STATUS(call, want)                                                          \
  do {                                                                                     \
    const fwa_status got_ = (call);                                                        \
    ++checks;                                                                              \
    if (got_ != (want)) {                                                                  \
      fprintf(stderr, "%s:%d: %s returned %s (%d), expected %s: %s\n", __FILE__, __LINE__, \
              #call, fwa_status_string(got_), (int)got_, fwa_status_string(want),          \
              fwa_last_error());                                                           \
      ++failures;                                                                          \
    } else if (got_ != FWA_OK && fwa_last_error()[0] == '\0') {                            \
      fprintf(stderr, "%s:%d: %s gave no message\n", __FILE__, __LINE__, #call);           \
      ++failures;                                                                          \
    }                                                                                      \
  } while (0)

#define EXPECT(cond)                                                      \
  do {                                                                    \
    ++checks;                                                             \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                         \
    }                                                                     \
  } while (0)

typedef struct {
  unsigned char* data;
  size_t size;
} blob;

static const char* fixture_dir;

static blob load(const char* name) {
  char path[4096];
  blob b = {NULL, 0};
  FILE* f;
  long n;
  snprintf(path, sizeof path, "%s/%s", fixture_dir, name);
  f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s (make it with tests/capi/make_release_fixtures.py)\n", path);
    exit(2);
  }
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    b.data = (unsigned char*)malloc((size_t)n + 1);
    if (b.data && fread(b.data, 1, (size_t)n, f) == (size_t)n) {
      b.size = (size_t)n;
      b.data[n] = 0;
    }
  }
  fclose(f);
  if (!b.data) exit(2);
  return b;
}

/* ---- the table "HSM" ------------------------------------------------------------- */

static blob table;
static int table_calls = 0;

static int hex_equals(const char* hex, size_t hex_len, const uint8_t* bytes, size_t n) {
  static const char digits[] = "0123456789abcdef";
  size_t i;
  if (hex_len != 2 * n) return 0;
  for (i = 0; i < n; ++i)
    if (hex[2 * i] != digits[bytes[i] >> 4] || hex[2 * i + 1] != digits[bytes[i] & 15]) return 0;
  return 1;
}

static int table_verify(void* ctx, int32_t algorithm, const uint8_t* key, size_t key_len,
                        const uint8_t* message, size_t message_len, const uint8_t* signature,
                        size_t signature_len) {
  const char* p = (const char*)table.data;
  const char* end = p + table.size;
  (void)ctx;
  ++table_calls;
  if (algorithm != FWA_SIG_ECDSA_P256_SHA256 && algorithm != FWA_SIG_ED25519) return -1;
  while (p < end) {
    const char* nl = memchr(p, '\n', (size_t)(end - p));
    const char* a = p;
    const char* b = memchr(a, ' ', (size_t)(nl - a));
    const char* c = b ? memchr(b + 1, ' ', (size_t)(nl - b - 1)) : NULL;
    if (!nl || !b || !c) return -1;
    if (hex_equals(a, (size_t)(b - a), key, key_len) &&
        hex_equals(b + 1, (size_t)(c - b - 1), message, message_len) &&
        hex_equals(c + 1, (size_t)(nl - c - 1), signature, signature_len))
      return 1;
    p = nl + 1;
  }
  return 0;
}

/* ---- an RPMB-like counter --------------------------------------------------------- */

typedef struct {
  uint64_t value;
  int broken;
  int advances;
} ram_counter;

static int ram_read(void* ctx, uint64_t* value) {
  ram_counter* c = (ram_counter*)ctx;
  if (c->broken) return 7;
  *value = c->value;
  return 0;
}

static int ram_advance(void* ctx, uint64_t value) {
  ram_counter* c = (ram_counter*)ctx;
  if (c->broken) return 7;
  c->value = value;
  ++c->advances;
  return 0;
}

/* A counter read from `ram`, advanced there too when `advance` (else read-only). */
static void ram_counter_init(fwa_counter* counter, ram_counter* ram, int advance) {
  fwa_counter_init(counter);
  counter->read = ram_read;
  if (advance) counter->advance = ram_advance;
  counter->ctx = ram;
}

/* ---- the suite -------------------------------------------------------------------- */

static const char* model_path;

/* The trust of a release: its policy, its signatures, the counter and the verifier. */
static void release_trust(fwa_trust* trust, const blob* policy, const blob* sig,
                          const fwa_counter* counter, fwa_verify_fn verify) {
  fwa_trust_init(trust);
  trust->policy = policy->data;
  trust->policy_size = policy->size;
  trust->signatures = sig->data;
  trust->signatures_size = sig->size;
  trust->counter = counter;
  trust->verify = verify;
}

/* Open options that check `trust`, the experts verified on first use. */
static void trusted_options(fwa_open_options* o, const fwa_trust* trust) {
  fwa_open_options_init(o);
  o->flags = FWA_OPEN_LAZY_VERIFY;
  o->trust = trust;
}

static fwa_status open_with(const char* policy, const char* sig, const fwa_counter* counter,
                            fwa_verify_fn verify, fwa_model** model) {
  blob p = load(policy), s = load(sig);
  fwa_trust trust;
  fwa_open_options o;
  fwa_status st;
  release_trust(&trust, &p, &s, counter, verify);
  trusted_options(&o, &trust);
  *model = NULL;
  st = fwa_model_open_file(model_path, &o, model);
  free(p.data);
  free(s.data);
  return st;
}

static fwa_status status_of(const char* policy, const char* sig, const fwa_counter* counter,
                            fwa_verify_fn verify) {
  fwa_model* m = NULL;
  const fwa_status st = open_with(policy, sig, counter, verify, &m);
  EXPECT((st == FWA_OK) == (m != NULL));
  fwa_model_free(m);
  return st;
}

static void suite(fwa_verify_fn verify) {
  ram_counter ram = {2, 0, 0};
  fwa_counter counter, file_counter;
  fwa_model* m = NULL;
  fwa_release_info info;
  char dir[] = "/tmp/fwa_release_walk_XXXXXX";
  char counter_path[64];

  ram_counter_init(&counter, &ram, 1);

  /* The round trip: co-signed (P-256 supplier + Ed25519 oem), verdict readable. */
  EXPECT_STATUS(open_with("policy.json", "ok.sig", &counter, verify, &m), FWA_OK);
  fwa_release_info_init(&info);
  EXPECT_STATUS(fwa_model_release_info(m, &info), FWA_OK);
  EXPECT(info.verified == 1 && info.security_version == 5 && info.counter == 2);
  EXPECT(info.n_signers == 2 && info.n_valid_signers == 2 && info.has_rxswin == 1);
  EXPECT(strcmp(info.rxswin, "RXSWIN-CAPI-5") == 0);
  EXPECT(ram.advances == 0); /* opening never advances the counter */

  /* Each refusal with its own status. */
  EXPECT_STATUS(status_of("policy.json", "other.sig", &counter, verify), FWA_ERR_SUBJECT_MISMATCH);
  EXPECT_STATUS(status_of("policy.json", "oem-only.sig", &counter, verify), FWA_ERR_UNTRUSTED);
  EXPECT(strstr(fwa_last_error(), "supplier") != NULL);
  EXPECT_STATUS(status_of("policy.json", "forged.sig", &counter, verify),
                FWA_ERR_SIGNATURE_INVALID);
  EXPECT_STATUS(status_of("policy-revoked.json", "ok.sig", &counter, verify), FWA_ERR_REVOKED);
  EXPECT_STATUS(status_of("policy-min9.json", "ok.sig", &counter, verify), FWA_ERR_ROLLBACK);
  EXPECT_STATUS(status_of("policy.json", "hsm-table.txt", &counter, verify),
                FWA_ERR_SIGNATURE_MALFORMED);
  EXPECT_STATUS(status_of("ok.sig", "ok.sig", &counter, verify), FWA_ERR_POLICY_MALFORMED);
  EXPECT_STATUS(status_of("policy.json", "ok.sig", NULL, verify), FWA_ERR_COUNTER_UNAVAILABLE);
  ram.broken = 1;
  EXPECT_STATUS(status_of("policy.json", "ok.sig", &counter, verify),
                FWA_ERR_COUNTER_UNAVAILABLE);
  EXPECT_STATUS(fwa_model_commit_security_version(m, &counter), FWA_ERR_COUNTER_UNAVAILABLE);
  ram.broken = 0;

  /* Commit after a successful boot: 2 -> 5; the older release is then a replay. */
  EXPECT_STATUS(fwa_model_commit_security_version(m, &counter), FWA_OK);
  EXPECT(ram.value == 5 && ram.advances == 1);
  EXPECT_STATUS(fwa_model_commit_security_version(m, &counter), FWA_OK); /* equal: no-op */
  EXPECT(ram.advances == 1);
  EXPECT_STATUS(status_of("policy.json", "old.sig", &counter, verify), FWA_ERR_ROLLBACK);
  EXPECT(strstr(fwa_last_error(), "counter") != NULL);
  EXPECT_STATUS(status_of("policy.json", "ok.sig", &counter, verify), FWA_OK);
  ram.value = 6;
  EXPECT_STATUS(fwa_model_commit_security_version(m, &counter), FWA_ERR_ROLLBACK);
  EXPECT(ram.value == 6); /* never lowered */
  fwa_model_free(m);

  /* The file store. */
  EXPECT(mkdtemp(dir) != NULL);
  snprintf(counter_path, sizeof counter_path, "%s/counter", dir);
  fwa_counter_init(&file_counter);
  file_counter.path = counter_path;
  EXPECT_STATUS(status_of("policy.json", "ok.sig", &file_counter, verify),
                FWA_ERR_COUNTER_UNAVAILABLE); /* missing: never 0 */
  EXPECT_STATUS(fwa_counter_file_init(counter_path, 3), FWA_OK);
  EXPECT_STATUS(fwa_counter_file_init(counter_path, 0), FWA_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(status_of("policy.json", "old.sig", &file_counter, verify), FWA_OK);
  EXPECT_STATUS(open_with("policy.json", "ok.sig", &file_counter, verify, &m), FWA_OK);
  EXPECT_STATUS(fwa_model_commit_security_version(m, &file_counter), FWA_OK);
  fwa_model_free(m);
  EXPECT_STATUS(status_of("policy.json", "old.sig", &file_counter, verify), FWA_ERR_ROLLBACK);
  unlink(counter_path);
  rmdir(dir);
}

/* ---- signed policies (fwa_trust.root_keys) ---------------------------------------- */

static fwa_status open_signed(const char* policy, const char* policy_sig, int threshold,
                              const fwa_counter* policy_counter, const fwa_counter* counter,
                              fwa_verify_fn verify, fwa_model** model) {
  blob p = load(policy), s = load("ok.sig"), r1 = load("root.pub.pem"), r2 = load("root2.pub.pem");
  blob ps = {NULL, 0};
  const char* roots[2];
  fwa_trust trust;
  fwa_open_options o;
  fwa_status st;
  if (policy_sig) ps = load(policy_sig);
  roots[0] = (const char*)r1.data;
  roots[1] = (const char*)r2.data;
  release_trust(&trust, &p, &s, counter, verify);
  EXPECT(trust.root_threshold == 1);
  trust.root_keys = roots;
  trust.n_root_keys = 2;
  trust.root_threshold = threshold;
  trust.policy_signatures = ps.data;
  trust.policy_signatures_size = ps.size;
  trust.policy_counter = policy_counter;
  trusted_options(&o, &trust);
  *model = NULL;
  st = fwa_model_open_file(model_path, &o, model);
  free(p.data);
  free(s.data);
  free(r1.data);
  free(r2.data);
  free(ps.data);
  return st;
}

static fwa_status signed_status(const char* policy, const char* policy_sig, int threshold,
                                const fwa_counter* policy_counter, fwa_verify_fn verify) {
  ram_counter ram = {2, 0, 0};
  fwa_counter counter;
  fwa_model* m = NULL;
  fwa_status st;
  ram_counter_init(&counter, &ram, 0);
  st = open_signed(policy, policy_sig, threshold, policy_counter, &counter, verify, &m);
  EXPECT((st == FWA_OK) == (m != NULL));
  fwa_model_free(m);
  return st;
}

static void policy_suite(fwa_verify_fn verify) {
  ram_counter ram = {2, 0, 0}, stored = {1, 0, 0};
  fwa_counter counter, policy_counter;
  fwa_model* m = NULL;
  fwa_release_info info;
  fwa_trust trust;
  fwa_open_options o;
  blob p, s, ps;
  const char* garbage[1] = {"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"};

  ram_counter_init(&counter, &ram, 0);
  ram_counter_init(&policy_counter, &stored, 1);

  /* Policy version 2, signed by both roots (P-256, Ed25519): one or both needed. */
  EXPECT_STATUS(open_signed("policy-v2.json", "policy-v2.json.sig", 2, &policy_counter, &counter,
                            verify, &m), FWA_OK);
  fwa_release_info_init(&info);
  EXPECT_STATUS(fwa_model_release_info(m, &info), FWA_OK);
  EXPECT(info.verified == 1 && info.policy_signed == 1 && info.policy_version == 2);
  EXPECT(stored.advances == 0); /* opening never advances the policy counter */
  /* Refusals, in the order of the check. */
  EXPECT_STATUS(signed_status("policy-v2.json", NULL, 1, &policy_counter, verify),
                FWA_ERR_SIGNATURE_MALFORMED); /* unsigned while root keys are configured */
  EXPECT(strstr(fwa_last_error(), "unsigned") != NULL);
  EXPECT_STATUS(signed_status("policy-v2.json", "ok.sig", 1, &policy_counter, verify),
                FWA_ERR_SIGNATURE_MALFORMED); /* a release's signatures are not a policy's */
  EXPECT_STATUS(signed_status("policy-revoked.json", "policy-v2.json.sig", 1, &policy_counter,
                              verify), FWA_ERR_SUBJECT_MISMATCH); /* the policy was edited */
  EXPECT_STATUS(signed_status("policy-v2.json", "policy-v2-forged.sig", 1, &policy_counter,
                              verify), FWA_ERR_SIGNATURE_INVALID);
  EXPECT_STATUS(signed_status("policy-v2.json", "policy-v2-stranger.sig", 1, &policy_counter,
                              verify), FWA_ERR_UNTRUSTED);
  EXPECT_STATUS(signed_status("policy.json", "policy.json.sig", 2, &policy_counter, verify),
                FWA_ERR_UNTRUSTED); /* one root signed it, two needed */
  EXPECT_STATUS(signed_status("policy-v2.json", "policy-v2.json.sig", 1, NULL, verify),
                FWA_ERR_COUNTER_UNAVAILABLE);
  EXPECT_STATUS(signed_status("policy-v2.json", "policy-v2.json.sig", 3, &policy_counter, verify),
                FWA_ERR_INVALID_ARGUMENT); /* more than the root keys given */
  /* The older signed policy is good until the newer one is committed. */
  EXPECT_STATUS(signed_status("policy.json", "policy.json.sig", 1, &policy_counter, verify),
                FWA_OK);
  EXPECT_STATUS(fwa_model_commit_policy_version(m, &policy_counter), FWA_OK);
  EXPECT(stored.value == 2 && stored.advances == 1);
  EXPECT_STATUS(signed_status("policy.json", "policy.json.sig", 1, &policy_counter, verify),
                FWA_ERR_ROLLBACK);
  EXPECT(strstr(fwa_last_error(), "policy") != NULL);
  stored.broken = 1;
  EXPECT_STATUS(signed_status("policy-v2.json", "policy-v2.json.sig", 1, &policy_counter, verify),
                FWA_ERR_COUNTER_UNAVAILABLE);
  stored.broken = 0;
  fwa_model_free(m);
  /* A model opened without root keys has no policy version to commit. */
  EXPECT_STATUS(open_with("policy.json", "ok.sig", &counter, verify, &m), FWA_OK);
  EXPECT_STATUS(fwa_model_commit_policy_version(m, &policy_counter), FWA_ERR_INVALID_ARGUMENT);
  fwa_model_free(m);

  /* The integrator's configuration: a bad root key, policy signatures without root keys. */
  p = load("policy-v2.json");
  s = load("ok.sig");
  ps = load("policy-v2.json.sig");
  release_trust(&trust, &p, &s, &counter, verify);
  trust.policy_counter = &policy_counter;
  trust.root_keys = garbage;
  trust.n_root_keys = 1;
  trust.policy_signatures = ps.data;
  trust.policy_signatures_size = ps.size;
  trusted_options(&o, &trust);
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_ERR_INVALID_ARGUMENT);
  trust.root_keys = NULL;
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_ERR_NULL_ARGUMENT);
  trust.n_root_keys = 0;
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_ERR_INVALID_ARGUMENT);
  /* A program built before the signed-policy fields passes the shorter struct: the policy is
   * trusted as given, as before. */
  trust.struct_size = (uint32_t)((const char*)&trust.root_keys - (const char*)&trust);
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_OK);
  fwa_model_free(m);
  free(p.data);
  free(s.data);
  free(ps.data);
}

int main(int argc, char** argv) {
  fwa_model* m = NULL;
  fwa_open_options o;
  fwa_trust trust;
  fwa_counter counter;
  fwa_release_info info;
  ram_counter ram = {0, 0, 0};
  fwa_status st;
  model_path = argc == 3 ? argv[1] : getenv("FWA_TEST_MODEL");
  fixture_dir = argc == 3 ? argv[2] : getenv("FWA_RELEASE_FIXTURES");
  if ((argc != 1 && argc != 3) || !model_path || !fixture_dir) {
    fprintf(stderr, "usage: %s MODEL.fwa FIXTURE_DIR (or set FWA_TEST_MODEL and "
            "FWA_RELEASE_FIXTURES: tests/capi/make_release_fixtures.py)\n", argv[0]);
    return 2;
  }
  table = load("hsm-table.txt");

  /* Bad arguments around the trust options. */
  EXPECT(strcmp(fwa_status_string(FWA_ERR_ROLLBACK), "rollback") == 0);
  EXPECT(strcmp(fwa_status_string(FWA_ERR_NO_CRYPTO), "no_crypto") == 0);
  fwa_trust_init(&trust);
  trust.struct_size = 3;
  fwa_open_options_init(&o);
  o.trust = &trust;
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_ERR_BAD_STRUCT_SIZE);
  fwa_trust_init(&trust);
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_ERR_NULL_ARGUMENT);
  /* A program built before `trust` existed passes the shorter struct: no release check. */
  o.struct_size = (uint32_t)((const char*)&o.trust - (const char*)&o);
  EXPECT_STATUS(fwa_model_open_file(model_path, &o, &m), FWA_OK);
  fwa_release_info_init(&info);
  EXPECT_STATUS(fwa_model_release_info(m, &info), FWA_OK);
  EXPECT(info.verified == 0);
  ram_counter_init(&counter, &ram, 1);
  EXPECT_STATUS(fwa_model_commit_security_version(m, &counter), FWA_ERR_INVALID_ARGUMENT);
  fwa_model_free(m);

  /* The library's own crypto, or its refusal. */
  st = status_of("policy.json", "ok.sig", &counter, NULL);
  if (st == FWA_ERR_NO_CRYPTO) {
    printf("release_walk: this build has no crypto: every policy refused (no_crypto); the "
           "suite runs with the verification callback\n");
    EXPECT(strstr(fwa_last_error(), "crypto") != NULL);
    /* A signed policy as well: its root signatures cannot be checked either. */
    {
      ram_counter stored = {1, 0, 0};
      fwa_counter policy_counter;
      ram_counter_init(&policy_counter, &stored, 0);
      EXPECT_STATUS(open_signed("policy-v2.json", "policy-v2.json.sig", 1, &policy_counter,
                                &counter, NULL, &m), FWA_ERR_NO_CRYPTO);
      EXPECT(m == NULL);
    }
  } else {
    EXPECT_STATUS(st, FWA_OK);
    printf("release_walk: signatures checked by the library\n");
    suite(NULL);
    policy_suite(NULL);
    EXPECT(table_calls == 0);
  }
  printf("release_walk: signatures checked by the verification callback\n");
  suite(table_verify);
  policy_suite(table_verify);
  EXPECT(table_calls > 0);
  free(table.data);
  printf("release_walk: %d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
