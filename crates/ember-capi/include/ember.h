/* Ember: sentence embeddings from BERT-family sentence-transformers models.
 *
 * The C interface of the `ember-capi` crate: `cargo build --release -p ember-capi` gives
 * target/release/libember_capi.so and libember_capi.a (link the static one with
 * -lpthread -ldl -lm). Every function but ember_free is
 * thread-safe; one EmberEmbedder may be shared by any number of threads. No Rust panic
 * crosses this boundary: a failure is a return value, and ember_last_error() describes it.
 * Ember never keeps a pointer the caller passed in: strings, text arrays and output buffers
 * stay the caller's, and need to live only for the call (unchanged by any other thread
 * while it runs).
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

/* Loads a model folder (or a hub id org/name found in the local Hugging Face cache; never
 * downloaded here, whatever HF_HUB_OFFLINE says: fetch it first, e.g. with `ember embed`).
 * model: NUL-terminated UTF-8 path or hub id; read during the call only.
 * threads: worker threads of the embedder's own pool, 0 for one per core; more than 4096 is
 * refused (a (size_t)-1 meant as "default" among them).
 * batch_size: texts per forward pass, 0 for the default (32).
 * Returns a new embedder, owned by the caller: release it with ember_free, once.
 * Returns NULL on failure (model NULL or not UTF-8, model not found, a folder Ember cannot
 * run, ...); ember_last_error then says why, naming the file and tensor at fault where there
 * is one.
 * Thread-safe: any thread may load, and several may load at once. */
EmberEmbedder *ember_load(const char *model, size_t threads, size_t batch_size);

/* Width of one embedding, in floats (0 if embedder is NULL). Never fails; thread-safe;
 * leaves ember_last_error as it was. */
size_t ember_dim(const EmberEmbedder *embedder);

/* Longest token sequence the model reads, [CLS] and [SEP] included; longer texts are
 * truncated (0 if embedder is NULL). Never fails; thread-safe; leaves ember_last_error as
 * it was. */
size_t ember_max_seq_length(const EmberEmbedder *embedder);

/* Embeds n texts: texts[i] points to lens[i] bytes of UTF-8 (no NUL terminator needed;
 * texts[i] may be NULL when lens[i] is 0). Writes n * ember_dim() floats to out, which holds
 * out_len floats (any floats past n * ember_dim() are left untouched): row i is text i's
 * embedding. texts, lens and out stay the caller's and are not used after the call returns;
 * during it, no other thread may write the texts or touch out, and no text may overlap out
 * (refused).
 * Returns 0 on success, -1 on failure (out is then unspecified; ember_last_error says why):
 * embedder, texts, lens or out NULL or misaligned for its type, a NULL text of nonzero length, a length over
 * SIZE_MAX / 2 (so (size_t)-1 is not "NUL-terminated"), a text that is not UTF-8 (its
 * index and byte offset are named), n or n * ember_dim() too large, out_len < n * ember_dim().
 * n == 0 succeeds and writes nothing.
 * Thread-safe: any number of threads may encode with one embedder at once; their calls take
 * turns on the embedder's pool, each using all of its threads. Once warm, a call allocates
 * no memory: once its thread has made a call of as many texts, and the embedder a call of as
 * many tokens. */
int ember_encode(const EmberEmbedder *embedder, const char *const *texts, const size_t *lens,
                 size_t n, float *out, size_t out_len);

/* The error of the calling thread's last ember_load or ember_encode, as NUL-terminated
 * UTF-8, or NULL if that call succeeded (or there was none). The string belongs to Ember:
 * do not free or modify it; it is valid until the thread's next ember_load or ember_encode
 * (copy it to keep it). Errors are per thread: another thread's calls never change it. */
const char *ember_last_error(void);

/* Releases an embedder and its threads (NULL is ignored). The pointer is invalid afterwards:
 * free each embedder once, after every call using it, on any thread, has returned. */
void ember_free(EmberEmbedder *embedder);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_H */
