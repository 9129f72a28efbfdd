/* Ember: sentence embeddings from BERT-family sentence-transformers models.
 *
 * The C interface of the `ember-capi` crate: `cargo build --release -p ember-capi` gives
 * target/release/libember_capi.so and libember_capi.a (link the static one with
 * -lpthread -ldl -lm). Every function is
 * thread-safe; one EmberEmbedder may be shared by any number of threads. No Rust panic
 * crosses this boundary: a failure is a return value, and ember_last_error() describes it.
 *
 * Texts are UTF-8 with explicit byte lengths (they may contain NUL). Embeddings are written
 * row-major into the caller's buffer: n rows of ember_dim() floats, in input order.
 *
 * This header is checked against the Rust exports by the crate's tests
 * (tests/c_abi.rs): a declaration that drifts from src/lib.rs fails them.
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded model. Opaque; create with ember_load, release with ember_free. */
typedef struct EmberEmbedder EmberEmbedder;

/* Loads a model folder (or a hub id org/name found in the local Hugging Face cache).
 * threads: worker threads of the embedder's own pool, 0 for one per core.
 * batch_size: texts per forward pass, 0 for the default (32).
 * Returns NULL on failure (see ember_last_error). */
EmberEmbedder *ember_load(const char *model, size_t threads, size_t batch_size);

/* Width of one embedding (0 if embedder is NULL). */
size_t ember_dim(const EmberEmbedder *embedder);

/* Longest token sequence the model reads; longer texts are truncated (0 if NULL). */
size_t ember_max_seq_length(const EmberEmbedder *embedder);

/* Embeds n texts: texts[i] points to lens[i] bytes of UTF-8. Writes n * ember_dim() floats to
 * out, which holds out_len floats. Returns 0 on success, -1 on failure (out is then
 * unspecified; see ember_last_error). n == 0 succeeds and writes nothing. */
int ember_encode(const EmberEmbedder *embedder, const char *const *texts, const size_t *lens,
                 size_t n, float *out, size_t out_len);

/* The error of the calling thread's last ember_load or ember_encode, as NUL-terminated
 * UTF-8, or NULL if that call succeeded. Valid until the thread's next ember_load or
 * ember_encode. */
const char *ember_last_error(void);

/* Releases an embedder (NULL is ignored). No other thread may be using it. */
void ember_free(EmberEmbedder *embedder);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */
