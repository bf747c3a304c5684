/* SPDX-License-Identifier: Apache-2.0 */
/* Walks every entry point of the C ABI with bad input (NULL pointers, freed and foreign
 * handles, too-small buffers, unknown struct sizes, bad token ids, a full context, truncated
 * and tampered artifacts) and checks each answers with its specific status and a message,
 * never a crash. Written in C99 against the public header only; run natively and under
 * ASan + UBSan (tests/fuzz/run_fuzz.sh).
 *
 *   fwa_capi_walk MODEL.fwa      (any valid artifact; tests/cross/make_test_model.py's) */
#define _POSIX_C_SOURCE 200809L /* mkfifo, mkdtemp, alarm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

#define EXPECT(cond)                                                         \
  do {                                                                       \
    ++checks;                                                                \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);    \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = (unsigned char*)malloc((size_t)n);
    if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
      free(data);
      data = NULL;
    }
    *size = (size_t)n;
  }
  fclose(f);
  return data;
}

static int count_tokens(void* user, int32_t token, const char* piece, size_t len) {
  (void)piece;
  (void)len;
  if (token >= 0) ++*(int*)user;
  return 0;
}

static int stop_at_once(void* user, int32_t token, const char* piece, size_t len) {
  (void)user;
  (void)token;
  (void)piece;
  (void)len;
  return 1;
}

static void walk_library(void) {
  char buf[8];
  size_t needed = 0;
  EXPECT(fwa_version_number() == FWA_VERSION_NUMBER);
  EXPECT(strcmp(fwa_version_string(), FWA_VERSION_STRING) == 0);
  EXPECT(fwa_abi_version() == FWA_ABI_VERSION);
  EXPECT(strcmp(fwa_status_string(FWA_ERR_PIN_MISMATCH), "pin_mismatch") == 0);
  EXPECT(strcmp(fwa_status_string((fwa_status)-5), "unknown_status") == 0);
  EXPECT_STATUS(fwa_cpu_features(buf, sizeof buf, NULL), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_kernel_choices(buf, 1, &needed), FWA_ERR_BUFFER_TOO_SMALL);
  EXPECT(needed > 1);
  EXPECT_STATUS(fwa_kernel_choices(NULL, 0, &needed), FWA_ERR_BUFFER_TOO_SMALL);
  /* Init functions accept NULL; free functions accept NULL. */
  fwa_open_options_init(NULL);
  fwa_model_info_init(NULL);
  fwa_session_options_init(NULL);
  fwa_sched_policy_init(NULL);
  fwa_sampling_params_init(NULL);
  fwa_generate_params_init(NULL);
  fwa_generation_stats_init(NULL);
  fwa_model_free(NULL);
  fwa_session_free(NULL);
  fwa_sampler_free(NULL);
}

static void walk_open(const char* path, const unsigned char* data, size_t size) {
  fwa_model* model = NULL;
  fwa_open_options opts;
  unsigned char* copy;
  fwa_open_options_init(&opts);
  EXPECT_STATUS(fwa_model_open_file(NULL, NULL, &model), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_model_open_file(path, NULL, NULL), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_model_open_memory(NULL, size, NULL, &model), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_model_open_file("/nonexistent/model.fwa", NULL, &model), FWA_ERR_IO);
  opts.struct_size = 3;
  EXPECT_STATUS(fwa_model_open_file(path, &opts, &model), FWA_ERR_BAD_STRUCT_SIZE);
  fwa_open_options_init(&opts);
  opts.flags = 0x80;
  EXPECT_STATUS(fwa_model_open_file(path, &opts, &model), FWA_ERR_INVALID_ARGUMENT);
  fwa_open_options_init(&opts);
  opts.pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
  EXPECT_STATUS(fwa_model_open_memory(data, size, &opts, &model), FWA_ERR_PIN_MISMATCH);
  opts.pin = "not a pin";
  EXPECT_STATUS(fwa_model_open_memory(data, size, &opts, &model), FWA_ERR_INVALID_ARGUMENT);
  EXPECT(model == NULL);
  /* Every truncation is refused; so is a flipped bit in the middle and in the last byte. */
  EXPECT_STATUS(fwa_model_open_memory(data, 0, NULL, &model), FWA_ERR_TRUNCATED);
  EXPECT_STATUS(fwa_model_open_memory(data, 100, NULL, &model), FWA_ERR_TRUNCATED);
  EXPECT_STATUS(fwa_model_open_memory(data, size - 1, NULL, &model), FWA_ERR_TRUNCATED);
  copy = (unsigned char*)malloc(size);
  if (!copy) return;
  memcpy(copy, data, size);
  copy[size / 2] ^= 0x04;
  EXPECT(fwa_model_open_memory(copy, size, NULL, &model) != FWA_OK);
  copy[size / 2] ^= 0x04;
  copy[0] ^= 0x01;
  EXPECT_STATUS(fwa_model_open_memory(copy, size, NULL, &model), FWA_ERR_BAD_MAGIC);
  free(copy);
  EXPECT(model == NULL);
}

/* A mapped file truncated after open: evaluation fails with FWA_ERR_IO, the process lives. */
static void walk_truncated_mapping(const unsigned char* data, size_t size) {
  char path[] = "/tmp/fwa_capi_walk_truncXXXXXX";
  const int fd = mkstemp(path);
  fwa_model* model = NULL;
  fwa_session* s = NULL;
  int32_t protection = -1;
  int32_t prompt[3] = {1, 2, 3};
  if (fd < 0) return;
  EXPECT(write(fd, data, size) == (ssize_t)size);
  close(fd);
  EXPECT_STATUS(fwa_model_open_file(path, NULL, &model), FWA_OK);
  if (model && fwa_model_protection(model, &protection) == FWA_OK &&
      protection == FWA_PROTECTION_NONE &&
      fwa_session_create(model, NULL, &s) == FWA_OK) {
    EXPECT_STATUS(fwa_session_eval(s, prompt, 3), FWA_OK);
    EXPECT(truncate(path, 4096) == 0);
    EXPECT_STATUS(fwa_session_eval(s, prompt, 3), FWA_ERR_IO);
    EXPECT(strstr(fwa_last_error(), "SIGBUS") != NULL);
    EXPECT_STATUS(fwa_session_decode(s, 1), FWA_ERR_IO);
    fwa_session_free(s);
  }
  fwa_model_free(model);
  unlink(path);
}

/* The open path's guarantees (docs/runtime.md, "Verification guarantees per open mode"): an
 * empty pin is malformed, only regular files are opened (a FIFO must fail at once: the alarm
 * turns a hang into a failure), copies are private, strict refuses an unprotected mapping. */
static void walk_open_guarantees(const char* path, const unsigned char* data, size_t size) {
  fwa_model* model = NULL;
  fwa_model* reference = NULL;
  fwa_session* s = NULL;
  fwa_session_options so;
  fwa_open_options opts;
  int32_t protection = -1;
  int32_t mapped_protection = -1;
  char dir[] = "/tmp/fwa_capi_walk_XXXXXX";
  char fifo[64];
  unsigned char* buffer;
  const float* logits = NULL;
  const float* ref_logits = NULL;
  size_t n_vocab = 0, ref_vocab = 0;

  fwa_open_options_init(&opts);
  opts.pin = "";
  EXPECT_STATUS(fwa_model_open_file(path, &opts, &model), FWA_ERR_INVALID_ARGUMENT);
  EXPECT(strstr(fwa_last_error(), "pin") != NULL);
  EXPECT_STATUS(fwa_model_open_memory(data, size, &opts, &model), FWA_ERR_INVALID_ARGUMENT);
  EXPECT(model == NULL);

  if (mkdtemp(dir)) {
    snprintf(fifo, sizeof fifo, "%s/model.fwa", dir);
    if (mkfifo(fifo, 0600) == 0) {
      alarm(20);
      EXPECT_STATUS(fwa_model_open_file(fifo, NULL, &model), FWA_ERR_IO);
      EXPECT(strstr(fwa_last_error(), "FIFO") != NULL);
      alarm(0);
      unlink(fifo);
    }
    EXPECT_STATUS(fwa_model_open_file(dir, NULL, &model), FWA_ERR_IO);
    EXPECT(strstr(fwa_last_error(), "directory") != NULL);
    rmdir(dir);
  }
  EXPECT(model == NULL);

  EXPECT(strcmp(fwa_protection_string(FWA_PROTECTION_NONE), "none") == 0);
  EXPECT(strcmp(fwa_protection_string(FWA_PROTECTION_COPY), "copy") == 0);
  EXPECT(strcmp(fwa_protection_string(FWA_PROTECTION_READ_ONLY_MOUNT), "read-only-mount") == 0);
  EXPECT(strcmp(fwa_protection_string(99), "unknown") == 0);
  EXPECT_STATUS(fwa_model_protection(NULL, &protection), FWA_ERR_NULL_ARGUMENT);

  /* Mapped: strict refuses it exactly when nothing protects the file. */
  EXPECT_STATUS(fwa_model_open_file(path, NULL, &model), FWA_OK);
  if (model) {
    EXPECT_STATUS(fwa_model_protection(model, NULL), FWA_ERR_NULL_ARGUMENT);
    EXPECT_STATUS(fwa_model_protection(model, &mapped_protection), FWA_OK);
    EXPECT(mapped_protection != FWA_PROTECTION_COPY &&
           mapped_protection != FWA_PROTECTION_CALLER_MEMORY);
    fwa_model_free(model);
    model = NULL;
  }
  opts.pin = NULL;
  opts.flags = FWA_OPEN_STRICT;
  if (mapped_protection == FWA_PROTECTION_NONE) {
    EXPECT_STATUS(fwa_model_open_file(path, &opts, &model), FWA_ERR_IO);
    EXPECT(strstr(fwa_last_error(), "unprotected mapping") != NULL);
  } else {
    EXPECT_STATUS(fwa_model_open_file(path, &opts, &model), FWA_OK);
  }
  fwa_model_free(model);
  model = NULL;
  opts.flags = FWA_OPEN_COPY | FWA_OPEN_STRICT;
  EXPECT_STATUS(fwa_model_open_file(path, &opts, &model), FWA_OK);
  EXPECT_STATUS(fwa_model_protection(model, &protection), FWA_OK);
  EXPECT(protection == FWA_PROTECTION_COPY);
  fwa_model_free(model);
  model = NULL;

  /* A caller buffer is the caller's; copied, it may be overwritten at once. */
  EXPECT_STATUS(fwa_model_open_memory(data, size, NULL, &reference), FWA_OK);
  EXPECT_STATUS(fwa_model_protection(reference, &protection), FWA_OK);
  EXPECT(protection == FWA_PROTECTION_CALLER_MEMORY);
  buffer = (unsigned char*)malloc(size);
  if (buffer && reference) {
    int32_t prompt[3] = {1, 2, 3};
    memcpy(buffer, data, size);
    opts.flags = FWA_OPEN_COPY;
    EXPECT_STATUS(fwa_model_open_memory(buffer, size, &opts, &model), FWA_OK);
    memset(buffer, 0x55, size);
    fwa_session_options_init(&so);
    if (model && fwa_session_create(model, &so, &s) == FWA_OK) {
      EXPECT_STATUS(fwa_session_eval(s, prompt, 3), FWA_OK);
      EXPECT_STATUS(fwa_session_logits(s, &logits, &n_vocab), FWA_OK);
      fwa_session* r = NULL;
      EXPECT_STATUS(fwa_session_create(reference, &so, &r), FWA_OK);
      EXPECT_STATUS(fwa_session_eval(r, prompt, 3), FWA_OK);
      EXPECT_STATUS(fwa_session_logits(r, &ref_logits, &ref_vocab), FWA_OK);
      EXPECT(logits && ref_logits && n_vocab == ref_vocab &&
             memcmp(logits, ref_logits, n_vocab * sizeof(float)) == 0);
      fwa_session_free(r);
      fwa_session_free(s);
    }
    fwa_model_free(model);
  }
  free(buffer);
  fwa_model_free(reference);
  walk_truncated_mapping(data, size);
}

static void walk_model(fwa_model* model) {
  fwa_model_info info;
  char small[4] = "abc";
  size_t needed = 0;
  int32_t ids[4] = {1, 2, 3, 4};
  fwa_model_info_init(&info);
  EXPECT_STATUS(fwa_model_get_info(NULL, &info), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_model_get_info(model, NULL), FWA_ERR_NULL_ARGUMENT);
  info.struct_size = (uint32_t)sizeof info + 8;
  EXPECT_STATUS(fwa_model_get_info(model, &info), FWA_ERR_BAD_STRUCT_SIZE);
  fwa_model_info_init(&info);
  EXPECT_STATUS(fwa_model_get_info(model, &info), FWA_OK);
  EXPECT(strncmp(info.pin, "sha256:", 7) == 0 && strlen(info.pin) == 71);
  EXPECT_STATUS(fwa_model_manifest_json(model, NULL, small, sizeof small, &needed),
                FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_model_manifest_json(model, "nope", small, sizeof small, &needed),
                FWA_ERR_NOT_FOUND);
  EXPECT_STATUS(fwa_model_manifest_json(model, "model_card", small, sizeof small, &needed),
                FWA_ERR_BUFFER_TOO_SMALL);
  EXPECT(needed > sizeof small && strcmp(small, "abc") == 0);
  EXPECT_STATUS(fwa_tokenize(model, NULL, 3, ids, 4, &needed), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_detokenize(model, NULL, 2, 0, small, sizeof small, &needed),
                FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_detokenize(model, ids, 4, 0x10, small, sizeof small, &needed),
                FWA_ERR_INVALID_ARGUMENT);
  if (!info.has_tokenizer) {
    EXPECT_STATUS(fwa_tokenize(model, "int", 3, ids, 4, &needed), FWA_ERR_NO_TOKENIZER);
    EXPECT_STATUS(fwa_detokenize(model, ids, 4, 0, small, sizeof small, &needed),
                  FWA_ERR_NO_TOKENIZER);
  }
}

static void walk_session(fwa_model* model) {
  fwa_session_options opts;
  fwa_session* s = NULL;
  fwa_sampler* sampler = NULL;
  fwa_sampling_params sp;
  fwa_generate_params gp;
  fwa_generation_stats stats;
  fwa_sched_policy policy;
  fwa_energy_model power;
  fwa_energy_report report;
  const float* logits = NULL;
  size_t n_vocab = 0, needed = 0;
  int64_t n_past = -1, per_layer[64];
  int32_t ids[40], token = -1, vocab;
  int i, generated = 0;
  const char* stops[1] = {NULL};
  fwa_model_info info;
  fwa_model_info_init(&info);
  if (fwa_model_get_info(model, &info) != FWA_OK) return;
  vocab = (int32_t)info.vocab_size;
  for (i = 0; i < 40; ++i) ids[i] = (int32_t)((i * 7 + 3) % vocab);

  fwa_session_options_init(&opts);
  EXPECT_STATUS(fwa_session_create(NULL, &opts, &s), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_session_create(model, &opts, NULL), FWA_ERR_NULL_ARGUMENT);
  opts.n_threads = 0;
  EXPECT_STATUS(fwa_session_create(model, &opts, &s), FWA_ERR_INVALID_ARGUMENT);
  fwa_session_options_init(&opts);
  opts.kv_cache = 3;
  EXPECT_STATUS(fwa_session_create(model, &opts, &s), FWA_ERR_INVALID_ARGUMENT);
  fwa_session_options_init(&opts);
  opts.prefill_chunk = -2;
  EXPECT_STATUS(fwa_session_create(model, &opts, &s), FWA_ERR_INVALID_ARGUMENT);
  fwa_session_options_init(&opts);
  opts.max_context = 32;
  opts.n_threads = 2;
  EXPECT(s == NULL);
  EXPECT_STATUS(fwa_session_create(model, &opts, &s), FWA_OK);
  if (!s) return;
  /* A model handle where a session is expected is not a live session handle. */
  EXPECT_STATUS(fwa_session_reset((fwa_session*)(void*)model), FWA_ERR_BAD_HANDLE);

  EXPECT_STATUS(fwa_session_logits(s, &logits, &n_vocab), FWA_ERR_NO_LOGITS);
  EXPECT_STATUS(fwa_session_eval(s, NULL, 3), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_session_eval(s, ids, 0), FWA_ERR_INVALID_ARGUMENT);
  ids[2] = vocab;
  EXPECT_STATUS(fwa_session_eval(s, ids, 4), FWA_ERR_BAD_TOKEN);
  ids[2] = -1;
  EXPECT_STATUS(fwa_session_eval(s, ids, 4), FWA_ERR_BAD_TOKEN);
  ids[2] = 5 % vocab;
  EXPECT_STATUS(fwa_session_eval(s, ids, 33), FWA_ERR_CONTEXT_FULL);
  EXPECT_STATUS(fwa_session_n_past(s, &n_past), FWA_OK);
  EXPECT(n_past == 0);
  EXPECT_STATUS(fwa_session_eval(s, ids, 30), FWA_OK);
  EXPECT_STATUS(fwa_session_decode(s, vocab + 1), FWA_ERR_BAD_TOKEN);
  EXPECT_STATUS(fwa_session_decode(s, 1), FWA_OK);
  EXPECT_STATUS(fwa_session_decode(s, 1), FWA_OK);
  EXPECT_STATUS(fwa_session_decode(s, 1), FWA_ERR_CONTEXT_FULL);
  EXPECT_STATUS(fwa_session_logits(s, NULL, &n_vocab), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_session_logits(s, &logits, &n_vocab), FWA_OK);
  EXPECT(logits != NULL && n_vocab == (size_t)vocab);
  EXPECT_STATUS(fwa_session_truncate(s, 33), FWA_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(fwa_session_truncate(s, -1), FWA_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(fwa_session_truncate(s, 4), FWA_OK);
  EXPECT_STATUS(fwa_session_experts_activated(s, per_layer, 0, &needed),
                FWA_ERR_BUFFER_TOO_SMALL);
  EXPECT(needed == (size_t)info.num_layers);
  if (needed <= 64)
    EXPECT_STATUS(fwa_session_experts_activated(s, per_layer, 64, &needed), FWA_OK);

  fwa_sched_policy_init(&policy);
  policy.max_active_cores = 3;
  EXPECT_STATUS(fwa_session_set_policy(s, &policy), FWA_ERR_INVALID_ARGUMENT);
  policy.max_active_cores = 1;
  policy.target_ms_per_token = -2.0;
  EXPECT_STATUS(fwa_session_set_policy(s, &policy), FWA_ERR_INVALID_ARGUMENT);
  policy.target_ms_per_token = 0.0;
  policy.memory_budget_bytes = -1;
  EXPECT_STATUS(fwa_session_set_policy(s, &policy), FWA_ERR_INVALID_ARGUMENT);
  policy.memory_budget_bytes = 0;
  policy.reserved0 = 1;
  EXPECT_STATUS(fwa_session_set_policy(s, &policy), FWA_ERR_INVALID_ARGUMENT);
  policy.reserved0 = 0;
  EXPECT_STATUS(fwa_session_set_policy(s, &policy), FWA_OK);
  policy.struct_size = 1;
  EXPECT_STATUS(fwa_session_get_policy(s, &policy), FWA_ERR_BAD_STRUCT_SIZE);
  fwa_sched_policy_init(&policy);
  EXPECT_STATUS(fwa_session_get_policy(s, &policy), FWA_OK);
  EXPECT(policy.max_active_cores == 1);

  fwa_sampling_params_init(&sp);
  sp.top_p = 0.0f;
  EXPECT_STATUS(fwa_sampler_create(model, &sp, &sampler), FWA_ERR_INVALID_ARGUMENT);
  fwa_sampling_params_init(&sp);
  sp.temperature = 0.7f;
  sp.seed = 9;
  EXPECT_STATUS(fwa_sampler_create(model, &sp, &sampler), FWA_OK);
  EXPECT_STATUS(fwa_sampler_sample(sampler, s, NULL), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_sampler_sample(sampler, s, &token), FWA_ERR_NO_LOGITS);  /* truncated */
  EXPECT_STATUS(fwa_session_decode(s, 2), FWA_OK);
  EXPECT_STATUS(fwa_sampler_sample(sampler, s, &token), FWA_OK);
  EXPECT(token >= 0 && token < vocab);
  EXPECT_STATUS(fwa_sampler_sample((fwa_sampler*)(void*)s, s, &token), FWA_ERR_BAD_HANDLE);

  fwa_generate_params_init(&gp);
  fwa_generation_stats_init(&stats);
  gp.max_tokens = 4;
  EXPECT_STATUS(fwa_generate(s, NULL, 3, &gp, count_tokens, &generated, &stats),
                FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_generate(s, ids, 0, &gp, count_tokens, &generated, &stats),
                FWA_ERR_INVALID_ARGUMENT);
  gp.sampling.struct_size = 0;
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, count_tokens, &generated, &stats),
                FWA_ERR_BAD_STRUCT_SIZE);
  fwa_generate_params_init(&gp);
  gp.max_tokens = 4;
  gp.n_stop_strings = 1;
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, count_tokens, &generated, &stats),
                FWA_ERR_NULL_ARGUMENT);
  gp.stop_strings = stops;
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, count_tokens, &generated, &stats),
                FWA_ERR_NULL_ARGUMENT);
  gp.n_stop_strings = 0;
  gp.max_tokens = -1;
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, count_tokens, &generated, &stats),
                FWA_ERR_INVALID_ARGUMENT);
  gp.max_tokens = 4;
  stats.struct_size = 9;
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, count_tokens, &generated, &stats),
                FWA_ERR_BAD_STRUCT_SIZE);
  fwa_generation_stats_init(&stats);
  EXPECT_STATUS(fwa_generate(s, ids, 40, &gp, count_tokens, &generated, &stats),
                FWA_ERR_CONTEXT_FULL);
  EXPECT(generated == 0);
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, count_tokens, &generated, &stats), FWA_OK);
  EXPECT(generated == 4 && stats.generated_tokens == 4 && stats.stop_reason == FWA_STOP_MAX_TOKENS);
  EXPECT_STATUS(fwa_generate(s, ids, 3, &gp, stop_at_once, NULL, NULL), FWA_OK);
  EXPECT_STATUS(fwa_generate(s, ids, 3, NULL, NULL, NULL, &stats), FWA_OK);
  EXPECT(stats.stop_reason == FWA_STOP_CONTEXT_FULL && stats.generated_tokens == 32 - 3);
  if (!info.has_tokenizer)
    EXPECT_STATUS(fwa_generate_text(s, "int", 3, &gp, NULL, NULL, NULL), FWA_ERR_NO_TOKENIZER);

  /* The energy estimate of the last generation: checked inputs, a total that adds up. */
  fwa_energy_model_init(&power);
  fwa_energy_report_init(&report);
  power.idle_power_w = 2.0;
  power.core_busy_power_w = 1.0;
  power.dram_energy_j_per_byte = 1e-10;
  EXPECT_STATUS(fwa_energy_estimate(NULL, &power, 400.0, 0.0, &report), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_energy_estimate(&stats, &power, 400.0, 0.0, NULL), FWA_ERR_NULL_ARGUMENT);
  EXPECT_STATUS(fwa_energy_estimate(&stats, &power, -1.0, 0.0, &report), FWA_ERR_INVALID_ARGUMENT);
  power.core_spin_power_w = -3.0;
  EXPECT_STATUS(fwa_energy_estimate(&stats, &power, 400.0, 0.0, &report), FWA_ERR_INVALID_ARGUMENT);
  power.core_spin_power_w = 1.0;
  power.struct_size = 4;
  EXPECT_STATUS(fwa_energy_estimate(&stats, &power, 400.0, 0.0, &report), FWA_ERR_BAD_STRUCT_SIZE);
  power.struct_size = (uint32_t)sizeof power;
  EXPECT_STATUS(fwa_energy_estimate(&stats, &power, 400.0, 0.0, &report), FWA_OK);
  EXPECT(report.total_j > 0 && report.total_j == report.static_j + (report.busy_j + report.spin_j +
         report.parked_j + report.other_cpu_j) + report.memory_j);
  EXPECT(report.static_j == 2.0 * stats.wall_s && stats.wall_s > 0);

  /* Freed handles are detected, not dereferenced. */
  fwa_sampler_free(sampler);
  EXPECT_STATUS(fwa_sampler_sample(sampler, s, &token), FWA_ERR_BAD_HANDLE);
  fwa_sampler_free(sampler); /* twice: ignored */
  fwa_session_free(s);
  EXPECT_STATUS(fwa_session_decode(s, 1), FWA_ERR_BAD_HANDLE);
  EXPECT_STATUS(fwa_session_n_past(s, &n_past), FWA_ERR_BAD_HANDLE);
  fwa_session_free(s);
}

int main(int argc, char** argv) {
  size_t size = 0;
  unsigned char* data;
  fwa_model* model = NULL;
  fwa_model_info info;
  /* The model: the argument, or FWA_TEST_MODEL (as ctest runs it). */
  const char* path = argc == 2 ? argv[1] : getenv("FWA_TEST_MODEL");
  if (argc > 2 || !path) {
    fprintf(stderr, "usage: %s MODEL.fwa (or set FWA_TEST_MODEL)\n", argv[0]);
    return 2;
  }
  data = read_file(path, &size);
  if (!data) {
    fprintf(stderr, "cannot read %s\n", path);
    return 2;
  }
  walk_library();
  walk_open(path, data, size);
  walk_open_guarantees(path, data, size);
  EXPECT_STATUS(fwa_model_open_memory(data, size, NULL, &model), FWA_OK);
  if (model) {
    walk_model(model);
    walk_session(model);
    fwa_model_free(model);
    fwa_model_info_init(&info);
    EXPECT_STATUS(fwa_model_get_info(model, &info), FWA_ERR_BAD_HANDLE);
  }
  free(data);
  printf("fwa_capi_walk: %d checks, %d failures\n", checks, failures);
  return failures ? 1 : 0;
}
