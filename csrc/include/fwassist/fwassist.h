/* SPDX-License-Identifier: Apache-2.0 */
/* fwassist: the C ABI (C99).
 *
 * An on-device runtime for sparse Mixture-of-Experts models stored as verified, hash-pinned
 * .fwa artifacts. This header is the whole stable interface of libfwassist; nothing else is
 * exported (every symbol starts with fwa_).
 *
 * Conventions
 *   - Every function that can fail returns an fwa_status; FWA_OK is 0. On failure,
 *     fwa_last_error() returns a message naming the problem (thread-local: it describes the
 *     last failed call on the calling thread and stays valid until that thread's next failing
 *     call). Out-parameters are written only on success unless stated.
 *   - Handles are opaque values, not addresses: the library never dereferences them and
 *     neither may the caller (compare them with NULL or each other only). A handle that was
 *     freed, a value that was never a handle, or a handle of another kind gives
 *     FWA_ERR_BAD_HANDLE, always: each handle carries its slot's generation, so a freed handle
 *     stays bad after its slot is reused. fwa_model_free/fwa_session_free/fwa_sampler_free/
 *     fwa_policy_free accept NULL and ignore any value that is not a live handle of their
 *     kind. At most 1,048,576 handles (models, sessions, samplers and policies together) are live at once; creating
 *     one more gives FWA_ERR_OUT_OF_MEMORY.
 *   - Options and report structs begin with their size: set struct_size = sizeof(the struct)
 *     (the *_init functions do it and fill the defaults). Later versions append fields only,
 *     so a program compiled against an older header keeps working; a size the library does
 *     not know gives FWA_ERR_BAD_STRUCT_SIZE.
 *   - Buffers are caller-owned. A function writing text or ids into a buffer takes its
 *     capacity and reports the needed size through *needed (text: bytes including the
 *     terminating NUL); a too-small buffer gives FWA_ERR_BUFFER_TOO_SMALL with *needed set
 *     and nothing written.
 *   - No C++ exception ever leaves the library (each entry point maps them to a status) and
 *     the library never hands the caller memory to free.
 *
 * Threads
 *   - An fwa_model is immutable after open: any number of sessions, on any threads, may share
 *     it. fwa_model_free must not race with calls that use the model or its sessions; free
 *     the sessions first (a session keeps its model alive, so freeing the model handle before
 *     its sessions is allowed: the weights are released with the last session).
 *   - An fwa_session (and an fwa_sampler) is used by one thread at a time; the caller
 *     serialises. A session runs its own worker threads inside its calls; they are parked
 *     (zero CPU) between calls.
 *
 * Allocation
 *   - fwa_model_open_*, fwa_session_create, fwa_sampler_create and fwa_policy_compile
 *     allocate everything the handle will use. fwa_session_eval (any number of tokens up to the prefill chunk per
 *     step), fwa_session_decode, fwa_session_logits and fwa_sampler_sample allocate nothing.
 *     Tokenizing, detokenizing and fwa_generate may allocate internally (freed before
 *     returning).
 */
#ifndef FWASSIST_H
#define FWASSIST_H

#include <stddef.h>
#include <stdint.h>

#define FWA_VERSION_MAJOR 0
#define FWA_VERSION_MINOR 1
#define FWA_VERSION_PATCH 0
/* major * 10000 + minor * 100 + patch, as fwa_version_number() returns. */
#define FWA_VERSION_NUMBER (FWA_VERSION_MAJOR * 10000 + FWA_VERSION_MINOR * 100 + FWA_VERSION_PATCH)
#define FWA_VERSION_STRING "0.1.0"
/* The ABI version: libfwassist.so.<FWA_ABI_VERSION> (the SOVERSION). It changes only when a
 * declaration below changes incompatibly. */
#define FWA_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* FWA_CDEF_BEGIN: from here to FWA_CDEF_END the text is plain C declarations, no
 * preprocessor lines, so that cffi's cdef can parse it as is (sdk/fwassist/_cffi.py). */

typedef enum fwa_status {
  FWA_OK = 0,
  FWA_ERR_INVALID_ARGUMENT = 1,    /* a parameter is out of its documented range */
  FWA_ERR_UNSUPPORTED_FORMAT = 2,  /* a weight format this build does not implement */
  FWA_ERR_SHAPE_MISMATCH = 3,
  FWA_ERR_NON_FINITE = 4,          /* NaN or Inf where a finite number is required */
  FWA_ERR_BUFFER_TOO_SMALL = 5,    /* *needed tells the size required */
  FWA_ERR_NO_KERNEL = 6,           /* no kernel variant runs on this CPU */
  FWA_ERR_IO = 10,                 /* the file cannot be opened, sized, mapped or read */
  FWA_ERR_TRUNCATED = 11,
  FWA_ERR_BAD_MAGIC = 12,          /* not a .fwa artifact */
  FWA_ERR_UNSUPPORTED_VERSION = 13,
  FWA_ERR_MALFORMED = 14,          /* a field breaks a rule of the artifact format */
  FWA_ERR_CAP_EXCEEDED = 15,       /* a length or count above the format's caps */
  FWA_ERR_TRAILING_BYTES = 16,
  FWA_ERR_OUT_OF_BOUNDS = 17,
  FWA_ERR_OVERLAP = 18,
  FWA_ERR_NONZERO_PADDING = 19,
  FWA_ERR_DIGEST_MISMATCH = 20,    /* the bytes are not the ones the manifest pins */
  FWA_ERR_PIN_MISMATCH = 21,       /* the artifact is not the expected (certified) one */
  FWA_ERR_INCOMPATIBLE = 22,       /* needs something this build does not implement */
  FWA_ERR_NULL_ARGUMENT = 30,      /* a required pointer is NULL */
  FWA_ERR_BAD_HANDLE = 31,         /* not a live handle of the expected kind */
  FWA_ERR_BAD_STRUCT_SIZE = 32,    /* struct_size is not a size this library knows */
  FWA_ERR_BAD_TOKEN = 33,          /* a token id outside [0, vocab size) */
  FWA_ERR_CONTEXT_FULL = 34,       /* the tokens do not fit in the session's context */
  FWA_ERR_NO_TOKENIZER = 35,       /* the artifact carries no tokenizer */
  FWA_ERR_OUT_OF_MEMORY = 36,
  FWA_ERR_NOT_FOUND = 37,          /* no such manifest section */
  FWA_ERR_NO_LOGITS = 38,          /* no token evaluated since the last reset/truncate */
  FWA_ERR_CANCELLED = 39,          /* not an error of the library: a callback asked to stop */
  FWA_ERR_UNSUPPORTED = 40,        /* a valid request this build does not implement yet */
  /* Signed releases (fwa_trust; docs/releases.md), in the order they are checked: */
  FWA_ERR_POLICY_MALFORMED = 50,   /* the trust policy breaks a rule of its format */
  FWA_ERR_POLICY_UNSATISFIABLE = 51, /* a required role its own non-revoked keys cannot meet */
  FWA_ERR_SIGNATURE_MALFORMED = 52,  /* the .sig file, a bundle, envelope or statement */
  FWA_ERR_SUBJECT_MISMATCH = 53,   /* signed for another artifact, model card or format */
  FWA_ERR_SIGNATURE_INVALID = 54,  /* a signature of a trusted key does not verify */
  FWA_ERR_UNTRUSTED = 55,          /* a required role lacks valid signatures of trusted keys */
  FWA_ERR_REVOKED = 56,            /* ... that revoked keys would have given */
  FWA_ERR_ROLLBACK = 57,           /* security_version below the policy minimum or the counter */
  FWA_ERR_COUNTER_UNAVAILABLE = 58, /* the monotonic counter cannot be read (never taken as 0) */
  FWA_ERR_NO_CRYPTO = 59,          /* a trust policy, in a build without crypto or callback */
  FWA_ERR_INTERNAL = 99            /* a bug: please report it with fwa_last_error() */
} fwa_status;

typedef struct fwa_model fwa_model;
typedef struct fwa_session fwa_session;
typedef struct fwa_sampler fwa_sampler;
typedef struct fwa_policy fwa_policy;

/* ---- library ---------------------------------------------------------------------- */

uint32_t fwa_version_number(void);      /* FWA_VERSION_NUMBER of the library */
const char* fwa_version_string(void);   /* "0.1.0" */
uint32_t fwa_abi_version(void);         /* FWA_ABI_VERSION of the library */
const char* fwa_status_string(fwa_status status);  /* "pin_mismatch", ...; never NULL */
const char* fwa_last_error(void);       /* message of this thread's last failure; "" if none */

/* The CPU as the library sees it: comma-separated feature names ("avx2,avx512f,...",
 * after the FWA_CPU_FEATURES mask) and the kernel variant chosen for each operation
 * ("gemv_exact=avx512,gemv_fast=avx512vnni,..."). */
fwa_status fwa_cpu_features(char* buf, size_t cap, size_t* needed);
fwa_status fwa_kernel_choices(char* buf, size_t cap, size_t* needed);

/* ---- model ------------------------------------------------------------------------ */

/* FWA_OPEN_LAZY_VERIFY: verify expert blocks on first use, not at open.
 * FWA_OPEN_COPY: read the file (fwa_model_open_file) or copy the buffer (fwa_model_open_memory)
 *   into private memory, then verify that copy: later writes to the file or buffer change
 *   nothing (FWA_PROTECTION_COPY). Costs RAM for the whole artifact.
 * FWA_OPEN_STRICT: fwa_model_open_file refuses (FWA_ERR_IO, "unprotected mapping: ...") to map
 *   a file whose bytes could change after verification (FWA_PROTECTION_NONE).
 * FWA_OPEN_PRIVATE_WEIGHTS: copy the non-expert weights (embedding, attention, norms, routers,
 *   lm_head) into private memory and verify the copy: under a memory limit they are never
 *   evicted and read again from the file unverified (experts go through the residency). */
enum { FWA_OPEN_LAZY_VERIFY = 1, FWA_OPEN_COPY = 2, FWA_OPEN_STRICT = 4,
       FWA_OPEN_PRIVATE_WEIGHTS = 8 };

/* ---- signed releases (docs/releases.md) ---------------------------------------------
 * A release signature file (MODEL.fwa.sig: one Sigstore bundle v0.3 per signer, each a DSSE
 * envelope around an in-toto statement naming the artifact's root digest) is checked against a
 * trust policy (JSON: keys per role, revoked keys, required roles, min_security_version) and a
 * monotonic counter, after the artifact itself is verified and before the model exists. */

/* The monotonic anti-rollback counter: 0 on success, anything else = unreadable / not
 * advanced (FWA_ERR_COUNTER_UNAVAILABLE; an unreadable counter is never taken as 0). */
typedef int (*fwa_counter_read_fn)(void* ctx, uint64_t* value);
typedef int (*fwa_counter_advance_fn)(void* ctx, uint64_t value);

typedef struct fwa_counter {
  uint32_t struct_size;
  int32_t reserved0;                /* must be 0 */
  const char* path;                 /* the file store ("<decimal>\n"), or NULL and: */
  fwa_counter_read_fn read;         /* the integrator's counter (RPMB, HSM, ...) */
  fwa_counter_advance_fn advance;   /* needed by fwa_model_commit_security_version only */
  void* ctx;
} fwa_counter;

void fwa_counter_init(fwa_counter* counter);

enum { FWA_SIG_ECDSA_P256_SHA256 = 1, FWA_SIG_ED25519 = 2 };
/* An external signature check (an HSM, the integrator's crypto): the key (DER
 * SubjectPublicKeyInfo, from the policy), the signed bytes (the DSSE PAE) and the signature
 * (ECDSA: DER; Ed25519: 64 bytes). Return 1 valid, 0 invalid (FWA_ERR_SIGNATURE_INVALID), any
 * other value a failure of the verifier (FWA_ERR_IO). */
typedef int (*fwa_verify_fn)(void* ctx, int32_t algorithm, const uint8_t* public_key,
                             size_t public_key_len, const uint8_t* message, size_t message_len,
                             const uint8_t* signature, size_t signature_len);

typedef struct fwa_trust {
  uint32_t struct_size;
  int32_t reserved0;                /* must be 0 */
  const void* policy;               /* the trust policy JSON (policy_size bytes) */
  size_t policy_size;
  const void* signatures;           /* the .sig file's bytes */
  size_t signatures_size;
  const fwa_counter* counter;       /* required: NULL gives FWA_ERR_COUNTER_UNAVAILABLE */
  fwa_verify_fn verify;             /* NULL: the library's crypto (OpenSSL libcrypto); a build
                                       without it refuses every policy with FWA_ERR_NO_CRYPTO */
  void* verify_ctx;
  /* Appended in 0.1 (a struct_size without them still works: the policy is trusted as given).
   * A signed trust policy (docs/releases.md §5): the root public keys provisioned on the
   * device. n_root_keys == 0: the policy is trusted as given (policy_signatures must be NULL).
   * Otherwise the open fails unless policy_signatures (the policy.json.sig file: bundles with
   * payloadType application/vnd.fwassist.trust-policy+json over the policy's exact bytes)
   * holds valid signatures of root_threshold distinct root keys (other keys are ignored) and
   * the policy's policy_version is not below the value of policy_counter (the device's stored
   * policy version, the same counter contract as `counter`). Statuses, in this order:
   * FWA_ERR_INVALID_ARGUMENT (a root key that is not a P-256 or Ed25519 PEM public key, more
   * than 16, a threshold outside 1..distinct keys), the policy's own statuses
   * (FWA_ERR_POLICY_MALFORMED, FWA_ERR_POLICY_UNSATISFIABLE), FWA_ERR_CAP_EXCEEDED (a policy
   * over 32 KiB),
   * FWA_ERR_SIGNATURE_MALFORMED (no policy_signatures: an unsigned policy is refused, or a
   * malformed file), FWA_ERR_SUBJECT_MISMATCH (signatures over other bytes),
   * FWA_ERR_SIGNATURE_INVALID (a root key's signature does not verify), FWA_ERR_UNTRUSTED
   * (too few root signatures), FWA_ERR_COUNTER_UNAVAILABLE (policy_counter NULL or
   * unreadable), FWA_ERR_ROLLBACK (an older policy); then the release itself. */
  const char* const* root_keys;     /* n_root_keys NUL-terminated PEM "PUBLIC KEY" texts */
  size_t n_root_keys;
  int32_t root_threshold;           /* distinct valid root signatures needed (init: 1) */
  int32_t reserved1;                /* must be 0 */
  const void* policy_signatures;    /* the policy's .sig file bytes, or NULL */
  size_t policy_signatures_size;
  const fwa_counter* policy_counter; /* the stored policy_version (fwa_model_commit_policy_version) */
} fwa_trust;

void fwa_trust_init(fwa_trust* trust);

typedef struct fwa_open_options {
  uint32_t struct_size;
  uint32_t flags;        /* FWA_OPEN_* */
  const char* pin;       /* NULL (no pin), or "sha256:<64 lowercase hex>": open fails unless it
                            matches. "" or any other text: FWA_ERR_INVALID_ARGUMENT */
  /* Appended in 0.1 (a struct_size without it still works: no release check). NULL: no
   * release check; else the open fails unless the release verifies (FWA_ERR_POLICY_* ...). */
  const fwa_trust* trust;
} fwa_open_options;

void fwa_open_options_init(fwa_open_options* options);

/* Opens, bounds-checks and verifies an artifact before any byte reaches a kernel; on any
 * failure nothing is kept and *model is left unchanged. options may be NULL (defaults).
 * Only a regular file is opened (a FIFO, directory or device: FWA_ERR_IO, without blocking).
 * Without FWA_OPEN_COPY the file is mapped: the verified bytes stay the file's bytes, so they
 * stay as verified only if the storage keeps the file unchanged (fwa_model_protection). A file
 * truncated while mapped does not crash the process: evaluation then fails with FWA_ERR_IO. */
fwa_status fwa_model_open_file(const char* path, const fwa_open_options* options,
                               fwa_model** model);
/* The same over a caller-owned buffer (no file system needed). The buffer is borrowed: it
 * must stay valid and unchanged until the model and all its sessions are freed
 * (FWA_PROTECTION_CALLER_MEMORY); with FWA_OPEN_COPY it is copied and may go at once. */
fwa_status fwa_model_open_memory(const void* data, size_t size, const fwa_open_options* options,
                                 fwa_model** model);
void fwa_model_free(fwa_model* model);

typedef struct fwa_model_info {
  uint32_t struct_size;
  uint32_t format_version_major, format_version_minor;
  uint32_t has_tokenizer;
  char pin[72];                   /* "sha256:" + 64 hex digits of the root digest + NUL */
  int64_t vocab_size, hidden_size, num_layers, num_heads, num_kv_heads, head_dim;
  int64_t num_experts, experts_per_token, moe_intermediate_size, intermediate_size;
  int64_t max_position_embeddings;
  int64_t weight_bytes;           /* bytes of the data region (all tensors) */
} fwa_model_info;

void fwa_model_info_init(fwa_model_info* info);
fwa_status fwa_model_get_info(const fwa_model* model, fwa_model_info* info);

/* What keeps an open model's weights equal to the bytes verified at open (docs/runtime.md,
 * "Verification guarantees per open mode"). */
typedef enum fwa_protection {
  FWA_PROTECTION_NONE = 0,            /* a mapped file that can still be written or truncated */
  FWA_PROTECTION_COPY = 1,            /* private memory (FWA_OPEN_COPY) */
  FWA_PROTECTION_CALLER_MEMORY = 2,   /* the caller's buffer: the caller keeps it unchanged */
  FWA_PROTECTION_FS_VERITY = 3,       /* an fs-verity file */
  FWA_PROTECTION_IMMUTABLE = 4,       /* the inode's immutable flag */
  FWA_PROTECTION_READ_ONLY_MOUNT = 5, /* a file system mounted read-only (its superblock) */
  FWA_PROTECTION_MEMFD_SEALED = 6     /* a memfd sealed with F_SEAL_WRITE and F_SEAL_SHRINK */
} fwa_protection;

fwa_status fwa_model_protection(const fwa_model* model, int32_t* protection);
/* "none", "copy", "caller-memory", "fs-verity", "immutable", "read-only-mount",
 * "memfd-sealed"; "unknown" for another value. Never NULL. */
const char* fwa_protection_string(int32_t protection);

/* A top-level manifest section as canonical JSON: "config", "model_card" (with
 * known_limitations), "provenance", "evidence", "sbom", ... FWA_ERR_NOT_FOUND if absent. */
fwa_status fwa_model_manifest_json(const fwa_model* model, const char* section, char* buf,
                                   size_t cap, size_t* needed);

/* The end-of-sequence ids a format 1.1 artifact pins (its "generation" section, also readable
 * with fwa_model_manifest_json), ascending: *needed = their number, 0 for a 1.0 artifact (none
 * pinned). Pass them as fwa_generate_params.stop_ids to stop there. FWA_ERR_BUFFER_TOO_SMALL
 * when they do not fit (ids may be NULL with cap 0 to ask for the number). */
fwa_status fwa_model_eos_ids(const fwa_model* model, int32_t* ids, size_t cap, size_t* needed);

/* The verified release of a model opened with a trust policy. */
typedef struct fwa_release_info {
  uint32_t struct_size;
  int32_t verified;                 /* 1: opened with fwa_open_options.trust; 0: without */
  uint64_t security_version;
  uint64_t counter;                 /* the counter's value read at open */
  int64_t policy_version;
  int32_t has_rxswin;
  int32_t n_signers;                /* bundles in the signature file */
  int32_t n_valid_signers;          /* of those, trusted, not revoked and verified */
  int32_t policy_signed;            /* 1: the policy's signatures were verified (root keys) */
  char rxswin[132];                 /* NUL-terminated when has_rxswin */
} fwa_release_info;

void fwa_release_info_init(fwa_release_info* info);
fwa_status fwa_model_release_info(const fwa_model* model, fwa_release_info* info);

/* After a successful boot of the new model: raises the counter to the model's verified
 * security_version (never lowers it; equal is a no-op). A separate, explicit call: opening
 * never advances the counter. FWA_ERR_INVALID_ARGUMENT for a model opened without a trust
 * policy or a counter without an advance callback (and no path); FWA_ERR_ROLLBACK if the
 * counter is already above it; FWA_ERR_COUNTER_UNAVAILABLE if it cannot be read or written. */
fwa_status fwa_model_commit_security_version(const fwa_model* model, const fwa_counter* counter);

/* After a signed policy (fwa_trust.root_keys) proved itself in use: raises the policy counter
 * to the model's verified policy_version (never lowers it; equal is a no-op), so an older
 * signed policy is refused from then on. Explicit, like the security version: opening never
 * advances it. FWA_ERR_INVALID_ARGUMENT for a model opened without root keys;
 * FWA_ERR_ROLLBACK / FWA_ERR_COUNTER_UNAVAILABLE as fwa_model_commit_security_version. */
fwa_status fwa_model_commit_policy_version(const fwa_model* model, const fwa_counter* counter);

/* Creates the file counter store at path with value (FWA_ERR_INVALID_ARGUMENT if it exists). */
fwa_status fwa_counter_file_init(const char* path, uint64_t value);

/* ---- tokenizer (the artifact's byte-level BPE) ------------------------------------- */

/* text: text_len bytes of UTF-8. Writes the ids to ids[0..*needed). */
fwa_status fwa_tokenize(const fwa_model* model, const char* text, size_t text_len,
                        int32_t* ids, size_t cap, size_t* needed);

enum { FWA_DETOKENIZE_SKIP_SPECIAL = 1 };
/* Writes the UTF-8 text and a terminating NUL (*needed counts it). */
fwa_status fwa_detokenize(const fwa_model* model, const int32_t* ids, size_t n_ids,
                          uint32_t flags, char* buf, size_t cap, size_t* needed);

/* ---- session ---------------------------------------------------------------------- */

enum { FWA_MODE_EXACT = 0, FWA_MODE_FAST = 1 };
/* KV cache storage: float32, or 16 bits (IEEE binary16 / bfloat16) stored rounded to nearest
 * even (subnormals kept, NaN -> the quiet NaN, overflow -> inf) and widened exactly; attention
 * computes in float32 either way, bit-identical on every ISA (docs/runtime.md). */
enum { FWA_KV_F32 = 0, FWA_KV_F16 = 1, FWA_KV_BF16 = 2 };

typedef struct fwa_session_options {
  uint32_t struct_size;
  int32_t mode;             /* FWA_MODE_EXACT (default) or FWA_MODE_FAST */
  int64_t max_context;      /* tokens; 0: min(max_position_embeddings, 4096) */
  int32_t n_threads;        /* worker threads including the caller's; default 1 */
  int32_t kv_cache;         /* FWA_KV_F32 (default, 0), FWA_KV_F16 or FWA_KV_BF16 */
  int64_t prefill_chunk;    /* tokens per forward step of a prompt; default 128 */
} fwa_session_options;

void fwa_session_options_init(fwa_session_options* options);
/* The session holds the KV cache and every buffer, allocated here. */
fwa_status fwa_session_create(fwa_model* model, const fwa_session_options* options,
                              fwa_session** session);
void fwa_session_free(fwa_session* session);

/* Appends ids[0..n) to the context and runs them (in chunks of prefill_chunk); afterwards
 * fwa_session_logits gives the last token's logits. FWA_ERR_BAD_TOKEN / CONTEXT_FULL are
 * checked before any work; on any failure the context is unchanged. */
fwa_status fwa_session_eval(fwa_session* session, const int32_t* ids, size_t n);
/* One token: the decode step. Allocates nothing. */
fwa_status fwa_session_decode(fwa_session* session, int32_t token);
/* The logits of the last evaluated token: *logits points into the session (valid until the
 * next call on it), *n_vocab floats. */
fwa_status fwa_session_logits(const fwa_session* session, const float** logits,
                              size_t* n_vocab);
fwa_status fwa_session_n_past(const fwa_session* session, int64_t* n_past);
/* Keeps the first n tokens of the context (their cache stays valid). */
fwa_status fwa_session_truncate(fwa_session* session, int64_t n);
fwa_status fwa_session_reset(fwa_session* session);

/* Scheduler policy. max_active_cores: how many of the session's threads the matmuls,
 * attention and experts may use (1..n_threads; 0 = all); the others stay parked.
 * target_ms_per_token > 0: a decode latency budget; the session then runs on the fewest
 * cores that meet it, re-decided every 16 decode steps from the measured step time with
 * hysteresis (docs/runtime.md); 0 = max_active_cores, minus one while another process
 * takes one of those cores (found by trial windows). memory_budget_bytes: bytes of
 * expert weights kept resident (0 = unlimited); it belongs to the session's model and so
 * applies to every session of that model. Cold experts beyond it are dropped from RAM
 * (madvise) and verified again on their next use; with lock_experts the resident ones are
 * mlock'ed. Set the policy between calls. Results never depend on it. */
typedef struct fwa_sched_policy {
  uint32_t struct_size;
  int32_t max_active_cores;
  double target_ms_per_token;
  int64_t memory_budget_bytes;
  int32_t lock_experts;
  int32_t reserved0;                 /* must be 0 */
} fwa_sched_policy;

void fwa_sched_policy_init(fwa_sched_policy* policy);
fwa_status fwa_session_set_policy(fwa_session* session, const fwa_sched_policy* policy);
fwa_status fwa_session_get_policy(const fwa_session* session, fwa_sched_policy* policy);

/* Routing statistics since the session was created or last cleared: for each layer, how
 * many distinct experts ran (per_layer[0..num_layers)). */
fwa_status fwa_session_experts_activated(const fwa_session* session, int64_t* per_layer,
                                         size_t cap, size_t* needed);
/* Tokens routed to each (layer, expert), row-major [num_layers][num_experts] (zero rows for
 * dense layers): counts[0..num_layers * num_experts). */
fwa_status fwa_session_expert_tokens(const fwa_session* session, uint64_t* counts, size_t cap,
                                     size_t* needed);
fwa_status fwa_session_clear_expert_stats(fwa_session* session);

/* Expert residency of a model (all its sessions) since it was opened. */
typedef struct fwa_residency_stats {
  uint32_t struct_size;
  int32_t locked;                    /* lock_experts in effect */
  uint64_t budget_bytes;             /* 0: unlimited */
  uint64_t resident_bytes;           /* verified expert blocks kept under the budget */
  uint64_t hits, misses;             /* uses of a resident block / uses that (re)verified */
  uint64_t releases;                 /* blocks dropped to meet the budget */
  uint64_t lock_failures;            /* mlock refused (RLIMIT_MEMLOCK) */
  /* Appended (a struct_size up to lock_failures is still accepted and filled that far): */
  int32_t prefetch;                  /* fwa_model_set_expert_prefetch in effect */
  int32_t reserved0;
  uint64_t expert_bytes;             /* all expert blocks of the artifact */
  uint64_t private_dense_bytes;      /* FWA_OPEN_PRIVATE_WEIGHTS copy, else 0 */
  uint64_t prefetch_issued;          /* blocks queued for the I/O thread */
  uint64_t prefetch_fetched;         /* of those, fetched, verified and made resident */
  uint64_t prefetch_useful;          /* prefetched blocks used before being dropped */
  uint64_t prefetch_wasted;          /* prefetched blocks dropped unused */
  uint64_t bytes_verified;           /* expert bytes hashed again (demand and prefetch) */
  uint64_t stall_ns;                 /* decode time spent fetching and verifying misses */
  uint64_t predicted;                /* experts predicted for the next layer (decode steps) */
  uint64_t predicted_routed;         /* of those, routed there: the predictor's precision */
  uint64_t prefetch_skipped;         /* predictions not queued while prefetch was paused
                                        (fewer than half of a window's fetches were used) */
} fwa_residency_stats;

void fwa_residency_stats_init(fwa_residency_stats* stats);
fwa_status fwa_model_residency(const fwa_model* model, fwa_residency_stats* stats);
/* on != 0: while a decode step runs an MoE layer, the next MoE layer's router is run on its
 * input and the predicted experts are read and verified ahead by a background thread (only
 * with a memory budget; logits unchanged). Call between forward passes. */
fwa_status fwa_model_set_expert_prefetch(fwa_model* model, int on);

/* ---- sampling and generation -------------------------------------------------------- */

typedef struct fwa_sampling_params {
  uint32_t struct_size;
  float temperature;         /* 0: greedy (argmax, ties to the lower id), else in [1e-3, 1e3];
                                default 0 (other values: FWA_ERR_INVALID_ARGUMENT) */
  int32_t top_k;             /* 0: off */
  float top_p;               /* 1: off; in (0, 1] */
  float repetition_penalty;  /* 1: off; in [1e-3, 1e3] */
  uint64_t seed;             /* PCG32: same seed, same tokens on every CPU */
} fwa_sampling_params;

void fwa_sampling_params_init(fwa_sampling_params* params);

/* A sampler owns the vocabulary-sized scratch memory sampling needs. */
fwa_status fwa_sampler_create(const fwa_model* model, const fwa_sampling_params* params,
                              fwa_sampler** sampler);
void fwa_sampler_free(fwa_sampler* sampler);
/* New parameters and a reseed (the random stream restarts from params->seed). */
fwa_status fwa_sampler_reset(fwa_sampler* sampler, const fwa_sampling_params* params);
/* Picks the next token from the session's last logits, the repetition penalty applying to
 * the session's context. Does not evaluate it (call fwa_session_decode). Allocates nothing. */
fwa_status fwa_sampler_sample(fwa_sampler* sampler, const fwa_session* session, int32_t* token);

/* Called once per generated token with its text piece (UTF-8, not NUL-terminated, may be
 * empty while a multi-byte character or a possible stop string is held back), and once more
 * with token -1 if text is left at the end. Return 0 to continue, non-zero to stop (the
 * generation then ends with FWA_STOP_CANCELLED and fwa_generate returns FWA_OK). The
 * callback must not call back into the same session. */
typedef int (*fwa_token_callback)(void* user, int32_t token, const char* piece,
                                  size_t piece_len);

/* ---- code policy: the decode-time guard (docs/code-policy.md, "Decode-time guard") ---- */

typedef enum fwa_pattern_kind {
  FWA_PATTERN_CALL = 0,     /* an identifier at identifier boundaries, then [ \t\n\r\v\f]* and ( */
  FWA_PATTERN_LITERAL = 1   /* the bytes anywhere */
} fwa_pattern_kind;

typedef struct fwa_policy_pattern {
  const char* text;         /* NUL-terminated; a call pattern is an ASCII C identifier */
  int32_t kind;             /* fwa_pattern_kind */
  int32_t rule;             /* index into the rule ids given to fwa_policy_compile */
} fwa_policy_pattern;

/* One intervention: the sampled token would have completed a pattern of `rule` and was
 * replaced by a draw with every such token masked; position is the index of the generated
 * token it replaced (the generation stops with FWA_STOP_POLICY when nothing is left). */
typedef struct fwa_intervention {
  int32_t rule;
  int32_t token;            /* the banned token the sampler had picked */
  int64_t position;
} fwa_intervention;

/* Compiles the patterns into an automaton over bytes bound to the model's token bytes (the
 * model needs a tokenizer: FWA_ERR_NO_TOKENIZER). rule_ids: n_rules NUL-terminated names (the
 * codecheck rule ids, e.g. "gets"). FWA_ERR_INVALID_ARGUMENT names a bad pattern or rule
 * index; FWA_ERR_CAP_EXCEEDED: more than 4096 patterns, rules or automaton states, or a pattern
 * over 256 bytes. The policy is immutable and may be shared by sessions on any threads; free it
 * after the generations that use it. */
fwa_status fwa_policy_compile(const fwa_model* model, const fwa_policy_pattern* patterns,
                              size_t n_patterns, const char* const* rule_ids, size_t n_rules,
                              fwa_policy** policy);
void fwa_policy_free(fwa_policy* policy);

typedef struct fwa_generate_params {
  uint32_t struct_size;
  int32_t reserved0;                 /* must be 0 */
  fwa_sampling_params sampling;      /* its own struct_size must be set too */
  int64_t max_tokens;                /* default 64 */
  const char* const* stop_strings;   /* n_stop_strings NUL-terminated UTF-8 strings */
  size_t n_stop_strings;
  const int32_t* stop_ids;           /* a stop id ends generation; it is neither emitted nor kept */
  size_t n_stop_ids;
  const fwa_policy* policy;          /* the code guard; NULL: none */
  fwa_intervention* interventions;   /* filled with the first interventions_capacity ones (may */
  size_t interventions_capacity;     /* be NULL / 0); stats->interventions counts them all */
} fwa_generate_params;

void fwa_generate_params_init(fwa_generate_params* params);

typedef enum fwa_stop_reason {
  FWA_STOP_NONE = 0,
  FWA_STOP_MAX_TOKENS = 1,
  FWA_STOP_STRING = 2,
  FWA_STOP_ID = 3,
  FWA_STOP_CONTEXT_FULL = 4,
  FWA_STOP_CANCELLED = 5,
  FWA_STOP_POLICY = 6                /* the guard found every token the sampler can pick banned */
} fwa_stop_reason;

typedef struct fwa_generation_stats {
  uint32_t struct_size;
  int32_t stop_reason;               /* fwa_stop_reason */
  int64_t prompt_tokens, cached_tokens, generated_tokens;
  double prefill_ms, decode_ms, ttft_ms;
  double prefill_tokens_per_s, decode_tokens_per_s;
  double experts_activated_per_layer;  /* distinct experts per MoE layer in this call, mean */
  double process_cpu_s;              /* CPU seconds the process used during the call */
  /* The energy model's inputs (docs/energy.md): core-seconds the session's threads spent
   * computing, spinning while waiting, and parked (asleep, no core time), and the bytes of
   * weights the forward passes read. */
  double busy_core_s, spin_core_s, parked_core_s;
  int64_t weight_bytes_read;
  double wall_s;                     /* wall-clock duration of the call */
  int32_t active_cores;              /* cores the scheduler policy used at the end */
  int32_t reserved0;
  int64_t interventions;             /* code-guard interventions (fwa_generate_params.policy) */
} fwa_generation_stats;

void fwa_generation_stats_init(fwa_generation_stats* stats);

/* Prefills the prompt (reusing the longest common prefix already in the session's context),
 * then samples, evaluates and streams tokens until a stop condition. stats may be NULL. */
fwa_status fwa_generate(fwa_session* session, const int32_t* prompt, size_t n_prompt,
                        const fwa_generate_params* params, fwa_token_callback callback,
                        void* user, fwa_generation_stats* stats);
/* The same with a text prompt, tokenized by the artifact's tokenizer. */
fwa_status fwa_generate_text(fwa_session* session, const char* prompt, size_t prompt_len,
                             const fwa_generate_params* params, fwa_token_callback callback,
                             void* user, fwa_generation_stats* stats);

/* ---- energy and carbon (docs/energy.md) ------------------------------------------ */

/* A device's power figures: the parameters of a profile in sdk/fwassist/energy_profiles/
 * (each documented there with its provenance; most are placeholders until measured). */
typedef struct fwa_energy_model {
  uint32_t struct_size;
  int32_t reserved0;                 /* must be 0 */
  double idle_power_w;               /* package with every core idle (x wall time) */
  double core_busy_power_w;          /* per core running work */
  double core_spin_power_w;          /* per core spin-waiting */
  double core_parked_power_w;        /* per core parked, above idle */
  double dram_energy_j_per_byte;     /* per byte of weights read */
} fwa_energy_model;

typedef struct fwa_energy_report {
  uint32_t struct_size;
  int32_t reserved0;
  double static_j, busy_j, spin_j, parked_j, other_cpu_j, memory_j, total_j;
  double energy_kwh;
  double operational_g;              /* E x I, gCO2e */
  double total_g;                    /* operational + embodied */
  double sci_g_per_1k_tokens;        /* Software Carbon Intensity, R = 1000 generated tokens */
} fwa_energy_report;

void fwa_energy_model_init(fwa_energy_model* model);     /* every figure 0 */
void fwa_energy_report_init(fwa_energy_report* report);
/* The modelled energy of one generation from its statistics (a model estimate, not a
 * measurement: the power figures come from the caller), and its SCI = (E*I + M) / R with I
 * the grid intensity in gCO2e/kWh and M the embodied share in gCO2e (0 if unknown). */
fwa_status fwa_energy_estimate(const fwa_generation_stats* stats, const fwa_energy_model* model,
                               double grid_intensity_g_per_kwh, double embodied_g,
                               fwa_energy_report* report);

/* FWA_CDEF_END */

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* FWASSIST_H */
