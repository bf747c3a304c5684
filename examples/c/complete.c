/* SPDX-License-Identifier: Apache-2.0 */
/* Completes a prompt with a pinned fwassist artifact and prints the statistics: the minimal
 * embedding of the C ABI (include/fwassist/fwassist.h).
 *
 *   fwa_complete MODEL.fwa PIN PROMPT [MAX_TOKENS [THREADS [exact|fast]]]
 *
 * Greedy decoding, so the completion is the same bits on every CPU. With the bundled model:
 *   fwa_complete "$(python -c 'import fwassist.models as m; print(m.tiny_coder_path())')" \
 *       "$(python -c 'import fwassist.models as m; print(m.TINY_CODER_PIN)')" "int main(void)"
 *
 * PIN is "sha256:<64 hex>" (the artifact's root digest, as `fwassist inspect` prints it) or
 * "-" to skip the check (not for production: an unpinned artifact proves nothing). Exit code 0
 * on success, 2 for bad usage, 1 for a library error (its status and message on stderr). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fwassist/fwassist.h>

static int fail(const char* what, fwa_status status) {
  fprintf(stderr, "fwa_complete: %s failed: %s: %s\n", what, fwa_status_string(status),
          fwa_last_error());
  return 1;
}

/* Streams each text piece to stdout as it is generated. */
static int on_token(void* user, int32_t token, const char* piece, size_t piece_len) {
  (void)user;
  (void)token;
  fwrite(piece, 1, piece_len, stdout);
  fflush(stdout);
  return 0; /* continue */
}

int main(int argc, char** argv) {
  if (argc < 4 || argc > 7) {
    fprintf(stderr, "usage: %s MODEL.fwa PIN|- PROMPT [MAX_TOKENS [THREADS [exact|fast]]]\n",
            argv[0]);
    return 2;
  }
  const char* path = argv[1];
  const char* pin = strcmp(argv[2], "-") == 0 ? NULL : argv[2];
  const char* prompt = argv[3];
  const long max_tokens = argc > 4 ? strtol(argv[4], NULL, 10) : 32;
  const long threads = argc > 5 ? strtol(argv[5], NULL, 10) : 1;
  const char* mode = argc > 6 ? argv[6] : "exact";
  if (strcmp(mode, "exact") != 0 && strcmp(mode, "fast") != 0) {
    fprintf(stderr, "fwa_complete: mode must be exact or fast, got \"%s\"\n", mode);
    return 2;
  }

  char features[256];
  char kernels[256];
  size_t needed = 0;
  if (fwa_cpu_features(features, sizeof features, &needed) != FWA_OK) features[0] = '\0';
  if (fwa_kernel_choices(kernels, sizeof kernels, &needed) != FWA_OK) kernels[0] = '\0';
  fprintf(stderr, "libfwassist %s (ABI %u); cpu: %s; kernels: %s\n", fwa_version_string(),
          (unsigned)fwa_abi_version(), features, kernels);

  fwa_open_options open_options;
  fwa_open_options_init(&open_options);
  open_options.pin = pin;
  fwa_model* model = NULL;
  fwa_status st = fwa_model_open_file(path, &open_options, &model);
  if (st != FWA_OK) return fail("fwa_model_open_file", st);

  fwa_model_info info;
  fwa_model_info_init(&info);
  st = fwa_model_get_info(model, &info);
  if (st != FWA_OK) {
    fwa_model_free(model);
    return fail("fwa_model_get_info", st);
  }
  fprintf(stderr, "model %s (format %u.%u): %lld layers, %lld experts top-%lld, vocab %lld%s\n",
          info.pin, (unsigned)info.format_version_major, (unsigned)info.format_version_minor,
          (long long)info.num_layers, (long long)info.num_experts,
          (long long)info.experts_per_token, (long long)info.vocab_size,
          pin ? ", verified against the pin" : ", NOT pinned");

  fwa_session_options session_options;
  fwa_session_options_init(&session_options);
  session_options.n_threads = (int32_t)threads;
  session_options.mode = strcmp(mode, "fast") == 0 ? FWA_MODE_FAST : FWA_MODE_EXACT;
  fwa_session* session = NULL;
  st = fwa_session_create(model, &session_options, &session);
  fwa_model_free(model); /* the session keeps the model alive */
  if (st != FWA_OK) return fail("fwa_session_create", st);

  fwa_generate_params params;
  fwa_generate_params_init(&params);
  params.max_tokens = max_tokens;
  fwa_generation_stats stats;
  fwa_generation_stats_init(&stats);
  fputs(prompt, stdout);
  st = fwa_generate_text(session, prompt, strlen(prompt), &params, on_token, NULL, &stats);
  fputc('\n', stdout);
  fwa_session_free(session);
  if (st != FWA_OK) return fail("fwa_generate_text", st);

  fprintf(stderr,
          "prompt %lld tokens, generated %lld (stop reason %d); prefill %.1f tok/s, decode %.1f "
          "tok/s; %.2f experts per MoE layer; %.3f CPU s\n",
          (long long)stats.prompt_tokens, (long long)stats.generated_tokens,
          (int)stats.stop_reason, stats.prefill_tokens_per_s, stats.decode_tokens_per_s,
          stats.experts_activated_per_layer, stats.process_cpu_s);
  return 0;
}
