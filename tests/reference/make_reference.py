#!/usr/bin/env python3
"""Generate the sentence-transformers reference fixtures for Ember's Rust tests.

The outputs are committed under ``tests/fixtures/``; ``cargo test`` reads them and never runs
Python. Rerun this script only to regenerate them (pinned environment:
``tests/reference/requirements.txt``)::

    HF_HUB_OFFLINE=1 python tests/reference/make_reference.py --minilm-dir /path/to/all-MiniLM-L6-v2

It writes (all paths relative to the repository root):

``tests/fixtures/texts.json``
    JSON list of awkward input texts (empty, whitespace, control characters, NUL, many scripts,
    emoji, code, literal special-token strings, texts far beyond every length limit, and
    exact truncation-boundary texts).

``tests/fixtures/minilm_reference.json``
    all-MiniLM-L6-v2 through ``SentenceTransformer(dir, device="cpu").encode(texts, batch_size=16)``
    (its own Normalize applies): truncated unpadded ``input_ids`` and f32 embeddings for every text.

``tests/fixtures/tiny-bert/``, ``tiny-bert-gelu-new/``, ``tiny-bert-relu/``
    Tiny random BertModels (hidden 52, 4 heads of 13, intermediate 76, 2 layers, 64 positions,
    reduced 2,601-entry WordPiece vocab) saved as complete sentence-transformers folders
    (Transformer + mean Pooling, max_seq_length 40, no Normalize). Every parameter, LayerNorm
    and biases included, is re-randomised so that every term of the forward pass matters.
    Only ``hidden_act`` (gelu / gelu_new / relu) and the seed differ between them.

``tests/fixtures/tiny_reference.json``
    Embeddings of the tiny models under all 63 non-empty subsets of the six pooling modes
    (tiny-bert), a few with Normalize appended, non-canonical mode orders, and two subsets each
    for the gelu_new and relu variants.

``tests/fixtures/tiny-bert-torchbin/``, ``tests/fixtures/torch-save/``
    ``torch.save`` (zip format) copies of tiny-bert's weights and small tensor files with shared
    storages, offsets, strides, f16/bf16 and pickle protocol 4, for Ember's ``pytorch_model.bin``
    reader (see ``make_torch_fixtures``; the only part that needs ``torch.save``). Rewrite only
    these with ``--torch-fixtures-only`` (no ``--minilm-dir`` needed).

``tests/fixtures/tiny-roberta/``, ``tests/fixtures/tiny-xlm-roberta/``
    Tiny random ``RobertaModel`` / ``XLMRobertaModel`` (model_type "roberta" / "xlm-roberta";
    hidden 48, 4 heads of 12, intermediate 80, 2 layers, gelu, layer_norm_eps 1e-5,
    type_vocab_size 1, pad_token_id 1, 66 positions, of which 64 usable as RoBERTa's start at
    pad_token_id + 1), every parameter re-randomised as for tiny-bert (the padding rows of the word
    and position tables included), saved as complete sentence-transformers folders with
    max_seq_length 40. tiny-roberta: byte-level BPE trained here with ``tokenizers`` and saved
    through RobertaTokenizerFast (ByteLevel, RobertaProcessing ``<s> ... </s>``), mean pooling.
    tiny-xlm-roberta: a SentencePiece-style Unigram tokenizer (Metaspace, no normalizer) saved
    through XLMRobertaTokenizerFast, CLS pooling then ``2_Normalize`` (listed in modules.json, no
    folder, as in published models). Both: 1,501 ids, ``<s>``=0, ``<pad>``=1, ``</s>``=2,
    ``<unk>``=3, ``<mask>`` (lstrip) last; trained on texts.json plus
    ``benches/corpus/wordnet-examples.txt``.

``tests/fixtures/tiny_roberta_reference.json``
    Both RoBERTa models through ``SentenceTransformer(folder, device="cpu").encode(texts,
    batch_size=16)``: the core texts, " a" x 38 (exactly 40 tokens) and x 39 (truncated), and
    texts with literal ``<pad>`` / ``<s>`` / ``</s>`` / ``<mask>`` / ``<unk>`` strings (a ``<pad>``
    token takes position row pad_token_id and is not counted by later positions), accents,
    emoji and CJK, and a truncated text that starts with ``<pad>``. Per model: unpadded
    ``input_ids``, the RoBERTa ``position_ids`` transformers derives from them,
    ``num_tokens_untruncated`` and f32 ``embeddings``. Rewrite only this part (and the two
    folders) with ``--only roberta`` (no ``--minilm-dir`` needed).

``tests/fixtures/tiny-mpnet/``
    A tiny random ``MPNetModel`` (model_type "mpnet", the architecture of all-mpnet-base-v2:
    hidden 48, 4 heads of 12, intermediate 80, 2 layers, gelu, layer_norm_eps 1e-5, pad_token_id 1,
    130 positions, of which 128 usable as they start at pad_token_id + 1, and a relative attention
    bias of 32 buckets x 4 heads shared by both layers), every parameter re-randomised as for
    tiny-roberta, the relative bias with std 1.0 so that a wrong bucket shows. Saved as a complete
    sentence-transformers folder (max_seq_length 128, mean pooling then ``2_Normalize``, as
    all-mpnet-base-v2) with MPNetTokenizer's tokenizer.json: BertNormalizer (lowercase),
    BertPreTokenizer, WordPiece (unk "[UNK]"), RobertaProcessing ``<s> ... </s>``; 2,606 ids laid
    out as all-mpnet-base-v2's: ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3 (a plain entry),
    tiny-bert's WordPiece vocab from 4 (``[UNK]``=104), ``<mask>`` (lstrip) last.

``tests/fixtures/tiny_mpnet_reference.json``
    tiny-mpnet through ``SentenceTransformer(folder, device="cpu").encode(texts, batch_size=16)``
    on the texts of tiny_roberta_reference.json plus " a" x 126 (exactly 128 tokens), x 127
    (truncated: relative distances up to 127) and a text of about 60 tokens: unpadded
    ``input_ids``, the absolute ``position_ids`` transformers derives (as RoBERTa's; the relative
    bias instead uses plain sequence indices), ``num_tokens_untruncated``, f32 ``embeddings``; and
    ``relative_buckets``: what transformers' ``MPNetEncoder.relative_position_bucket`` itself
    returns for every relative position (key index - query index) from -600 to 600 (32 buckets,
    max_distance 128). Rewrite only this part (and the folder) with ``--only mpnet`` (no
    ``--minilm-dir`` needed: tiny-bert's committed vocab.txt is used).

``tests/fixtures/tiny-distilbert/``
    A tiny random ``DistilBertModel`` (model_type "distilbert", the architecture of
    distiluse-base-multilingual-cased: dim 48, 4 heads of 12, hidden_dim 80, 2 layers, gelu, learned
    positions (sinusoidal_pos_embds false), 64 positions, pad_token_id 0; no token-type table; its
    LayerNorm eps is 1e-12, fixed in the code, not in config.json), every parameter re-randomised as
    for tiny-bert (the three LayerNorms of each layer and of the embeddings, the biases, the padding
    row). Tokenizer: tiny-bert's WordPiece vocab.txt saved through DistilBertTokenizerFast
    (lower-casing, ``[CLS] ... [SEP]``, no token_type_ids: its tokenizer.json equals tiny-bert's).
    Saved as a complete sentence-transformers folder, max_seq_length 40: mean Pooling, then
    ``2_Dense``: a seeded ``Dense(48 -> 24, bias=True, activation_function=Tanh())`` written by
    ``Dense.save`` itself (``2_Dense/config.json`` and ``2_Dense/model.safetensors`` with
    ``linear.weight`` [out, in] and ``linear.bias`` [out], no safetensors metadata); no Normalize.

``tests/fixtures/tiny-bert-dense/``, ``tests/fixtures/tiny-bert-dense-identity/``
    Copies of tiny-bert/ (same weights, config and tokenizer files) with other module chains:
    tiny-bert-dense as LaBSE, CLS Pooling then ``Dense(52 -> 52, bias=True, Tanh)`` then
    ``3_Normalize`` (listed in modules.json, no folder); tiny-bert-dense-identity mean Pooling then
    ``Dense(52 -> 20, bias=False, activation Identity)`` (only ``linear.weight``), no Normalize.

``tests/fixtures/tiny_distilbert_dense_reference.json``
    The three folders through ``SentenceTransformer(folder, device="cpu").encode(texts,
    batch_size=16)`` on the texts of tiny_mpnet_reference.json (truncated at 40 tokens): per model
    its ``model_type``, ``modules``, Dense settings, unpadded ``input_ids`` (the same in all three),
    ``num_tokens_untruncated`` and f32 ``embeddings`` (24, 52 and 20 wide). Checked here against a
    recomputation from the plain transformers model (pooling, ``tanh(x @ W.T + b)``, L2 norm in
    f64). Rewrite only this part (and the three folders) with ``--only distilbert`` (no
    ``--minilm-dir`` needed: it copies the committed tiny-bert/).

``tests/fixtures/tiny-bert-prompts/``
    A copy of tiny-bert/ (same weights, tokenizer, mean pooling with ``include_prompt`` true,
    max_seq_length 40) plus ``config_sentence_transformers.json`` in the exact serialisation of ST's
    own save (``json.dump(config, indent=2, sort_keys=True)``, no trailing newline; keys
    ``__version__``, ``default_prompt_name``, ``model_type``, ``prompts``, ``similarity_fn_name``) with
    prompts ``{"query": "query: ", "passage": "passage: ", "empty": ""}`` and default_prompt_name
    "query". (ST's save would also list ``"document": ""``, the placeholder every SentenceTransformer
    has; it is left out, and loading adds it back.)

``tests/fixtures/tiny_prompts_reference.json``
    tiny-bert-prompts through ``encode(texts, batch_size=16, prompt_name=..., prompt=...)`` on the
    texts of tiny_mpnet_reference.json, one case per call of ``PROMPT_CASES``: the default prompt
    (no arguments), ``prompt_name`` "passage" and "empty", ``prompt="custom instruction: "`` and
    ``prompt=""`` (which disables the default). Per case: ``call``, ``prompt_name``, ``prompt``, the
    ``resolved_prompt`` ST prepends (``prompt + text``, one string, tokenized and truncated to 40
    tokens together), the ``prompt_length`` feature ST's Transformer computes (unused by this
    pooling), untruncated counts, unpadded ``input_ids`` and f32 ``embeddings``; and
    ``method_checks``: encode_query / encode_document compared bit for bit with the cases. Checked
    here against the plain BertModel (mean pooling in f64). Rewrite only this part (and the folder)
    with ``--only prompts`` (no ``--minilm-dir`` needed: it copies the committed tiny-bert/).

``tests/fixtures/tiny_exclude_prompt_reference.json``
    tiny-bert-prompts with its ``1_Pooling/config.json`` rewritten (in a temporary copy) to all six
    modes and ``include_prompt: false`` (recorded as ``pooling_config``), through ``encode(texts,
    batch_size=16, prompt_name=..., prompt=...)`` under each of ``EXCLUDE_PROMPT_CASES``: the default
    prompt, "passage", a custom prompt, ``prompt=""`` (nothing left out) and a prompt longer than
    max_seq_length (ST counts 39 prompt tokens: only each text's final [SEP] is pooled). Per case
    the ``prompt_length`` ST's Transformer computes (the prompt tokenized alone, less its trailing
    special token) and f32 ``embeddings``; checked here against the plain BertModel with the masked
    pooling formulas in f64. Rewrite only this file with ``--only exclude-prompt``.

``tests/fixtures/tiny_quantize_reference.json``
    tiny-bert through ``encode(texts, batch_size=16, precision=p)`` for p in int8, uint8, binary and
    ubinary (``quantize_embeddings`` on the call's own float32 rows: int8/uint8 on their per-dimension
    min and max), on the texts of tiny_mpnet_reference.json: the float32 ``embeddings``, those
    ``ranges`` ([2, 52]) and each precision's integer ``values`` and NumPy ``dtype``. Rewrite only
    this file with ``--only quantize``.

``tests/fixtures/tokenizer_class_reference.json``
    transformers 5's AutoTokenizer (as sentence-transformers loads it) on copies of tiny-bert,
    tiny-mpnet, tiny-roberta, tiny-xlmr-spm and tiny-xlm-roberta whose tokenizer.json /
    tokenizer_config.json / special_tokens_map.json / config.json are edited as the
    *_CLASS_VARIANTS lists say (each edit is recorded: a dotted key, or a list index, set to a
    value, or removed): the class it chose and each text's ``input_ids``. The model-specific
    classes (BertTokenizer, MPNetTokenizer, RobertaTokenizer, XLMRobertaTokenizer,
    CamembertTokenizer) keep only tokenizer.json's vocabulary (merges, charsmap) and build the rest
    from the class and tokenizer_config.json; the added tokens come from the config's
    added_tokens_decoder when it has one; ``PreTrainedTokenizerFast`` takes tokenizer.json as it is.
    Rewrite only this file with ``--only tokenizer-class``.

``tests/fixtures/tiny-modernbert/``, ``tests/fixtures/tiny-modernbert-bias/``
    Tiny random ``ModernBertModel`` (model_type "modernbert", the architecture of
    nomic-ai/modernbert-embed-base and Alibaba-NLP/gte-modernbert-base: hidden 64, 4 heads of 16,
    intermediate 96 (GeGLU: ``Wi`` [192, 64] split into input and gate), 4 pre-norm layers (layer 0
    without attn_norm), fused ``Wqkv``, rotate_half RoPE with one theta per layer type, a sliding
    window ``|q - k| <= local_attention // 2`` on "sliding_attention" layers, embeddings =
    LayerNorm(tok_embeddings) only, final_norm; gelu, norm_eps 1e-5, 512 positions, vocab_size 640
    rounded up past the tokenizer's 605 ids), every parameter re-randomised as for tiny-roberta (the
    norm weights ``1 + 0.1 N(0, 1)``). tiny-modernbert: no biases, layers full, sliding, sliding,
    full, local_attention 16, thetas 160000 (full) / 10000 (sliding), config.json and
    tokenizer_config.json hand-written in the format of the published checkpoints (transformers
    4.48: ``global_attn_every_n_layers`` 3, ``global_rope_theta``, ``local_rope_theta``, unused
    ``layer_norm_eps`` and ``position_embedding_type`` "absolute"; no ``layer_types`` or
    ``rope_parameters``), mean pooling then ``2_Normalize``. tiny-modernbert-bias: norm_bias,
    attention_bias and mlp_bias (random, nonzero), layers sliding, full, sliding, full (no
    global_attn_every_n_layers gives it), local_attention 8, thetas 80000 / 5000, config.json as
    transformers 5 saves it (``layer_types``, ``rope_parameters``), CLS pooling, no Normalize. Both
    max_seq_length 128, the same tokenizer: a byte-level BPE laid out as ModernBERT's (NFC,
    ByteLevel, BPE without unk, 600 ids trained on the RoBERTa corpus), then [UNK], [CLS], [SEP],
    [PAD], [MASK] (lstrip) = 600..604 as special added tokens, TemplateProcessing
    ``[CLS] $A [SEP]``; no token_type_ids.

``tests/fixtures/tiny_modernbert_reference.json``
    Both folders through ``SentenceTransformer(folder, device="cpu").encode(texts, batch_size=16)``
    on the texts of tiny_roberta_reference.json, MPNet's extra texts (" a" x 126: exactly 128
    tokens, x 127: truncated), texts of 5, 6, 9 and 10 tokens around both windows' edges, and
    literal [PAD] / [CLS] / [SEP] / [UNK] / [MASK] strings (ordinary tokens to the model):
    per model unpadded ``input_ids``, ``position_ids`` (the plain indices 0..n-1 RoPE uses),
    ``num_tokens_untruncated``, f32 ``embeddings``, and its ``layer_types``, ``sliding_window``
    (= local_attention // 2, inclusive) and ``rope_theta`` per layer type. Checked here against
    the plain ModernBertModel (pooled in f64), which our own window masks reproduce exactly, and
    against mutations that must each move the embeddings by more than 1e-3: no window, the two
    thetas swapped, no RoPE, an exclusive or an unhalved window, interleaved RoPE and (bias model)
    zeroed biases. Rewrite only this part (and the two folders) with ``--only modernbert`` (no
    ``--minilm-dir`` needed).

``tests/fixtures/tiny-gte/``, ``tiny-gte-multilingual/``, ``tiny-gte-new/``, ``tiny_gte_reference.json``
    Tiny random ``GteModel`` (transformers 5's model_type "gte", the architecture of Alibaba-NLP's
    gte-base-en-v1.5 / gte-multilingual-base: hidden 48, 4 heads of 12, 2 post-LayerNorm layers,
    rotate_half RoPE, biases on q/k/v/o and down_proj, ``down(gelu(gate(x)) * up(x))``, no
    position table, max_position_embeddings 160), saved by transformers under the published
    names (``qkv_proj``, ``up_gate_proj`` = [up; gate], ``attn_ln``, ``mlp_ln``), max_seq_length
    128. tiny-gte: tiny-bert's WordPiece, no token-type table, theta 10000, weights under a
    ``gte.`` prefix (transformers' task heads save so), CLS pooling;
    tiny-gte-multilingual: tiny-xlmr-spm's tokenizer without a tokenizer_class (AutoTokenizer
    takes model_type "gte"'s XLMRobertaTokenizer), one token type, the default theta 160000,
    weights under a ``new.`` prefix, mean pooling + Normalize; tiny-gte-new: config.json in
    Alibaba-NLP's NewConfig format (model_type "new", rope_theta 2000, rope_scaling
    {"type": "ntk", "factor": 2.0}, pack_qkv, ...), two token types, mean pooling; its reference
    is the native model with the inverse frequencies of the published NTKScalingRotaryEmbedding
    (transformers cannot load "new" without the remote code). The reference holds, per folder,
    ``input_ids``, ``num_tokens_untruncated`` and f32 ``embeddings`` on MPNet's texts, each
    checked against the plain model pooled in f64 and against mutations that must move it by
    more than 1e-3 (no rotation, token type 1, gate and up swapped, the unscaled frequencies).
    Rewrite only these with ``--only gte``.

``tests/fixtures/tiny-jina/``, ``tiny-jina-reglu/``, ``tiny-jina-original/``, ``tiny_jina_reference.json``
    Tiny random JinaBERTs (jina-embeddings-v2-small-en / -base-en's architecture: a ``bert``
    config with ``"position_embedding_type": "alibi"``; hidden 48, 2 post-LayerNorm layers, no
    position table, ALiBi ``-slope_h * |j - i|`` added to the scaled attention scores, 512
    positions, max_seq_length 128), built by ``jina_bert.py`` (our PyTorch JinaBERT: Jina's remote
    code is not vendored; it was checked once against it) and saved under the published names
    with Jina's config.json (auto_map to jinaai/jina-bert-implementation). tiny-jina: GEGLU
    (``mlp.gated_layers`` = [gate; up], ``mlp.wo``, ``mlp.layernorm``), 6 heads (ALiBi's
    interleaved slopes, as base-en's 12), mean pooling; tiny-jina-reglu: ReGLU, 8 heads, weights
    under a ``bert.`` prefix, mean + Normalize; tiny-jina-original: feed_forward_type
    "original" (BERT's feed-forward, gelu_new), 4 heads, CLS pooling. sentence-transformers
    loads each with ``AutoModel`` mapped to jina_bert's class. Each folder's ``input_ids``,
    ``num_tokens_untruncated``, f32 ``embeddings`` and ``alibi_slopes`` on MPNet's texts, checked
    against an f64 recomputation from the checkpoint's tensors and against mutations that must
    move it by more than 1e-3 (no ALiBi, the slopes reversed, token type 1, gate and up
    swapped). Rewrite only these with ``--only jina``.

``tests/fixtures/sbert_base_seeded_reference.json``
    A BERT-base-shaped model (12 x 768, 30522 vocab, bert-base-uncased tokenizer, mean pooling,
    max_seq_length 75) whose weights come from a documented counter-based generator (SEED_SPEC
    below) that the Rust tests re-implement, so the ~440 MB folder is built in a temporary
    directory and never committed. Holds weight checksums, input_ids and embeddings.

Floats are written as the shortest decimal string that parses back (also via f64 then a cast)
to the identical f32. The script is deterministic: torch runs single-threaded on the CPU and all
random weights come from fixed seeds; the tokenizers trained here are reproducible too (the BPE
trainer is; the Unigram trainer's scores are not, so they are re-estimated, see
``train_unigram_tokenizer``). On another CPU the float results can differ in the last bits
(token ids and weights do not), so a full rerun there rewrites the embeddings of every fixture.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import safetensors.numpy  # noqa: E402
import safetensors.torch  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    BertConfig,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertModel,
    DistilBertTokenizerFast,
    GteConfig,
    GteModel,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
    MPNetTokenizerFast,
    NomicBertConfig,
    NomicBertModel,
    RobertaConfig,
    RobertaModel,
    RobertaTokenizerFast,
    XLMRobertaConfig,
    XLMRobertaModel,
    PreTrainedTokenizerFast,
    XLMRobertaTokenizerFast,
)
from transformers.models.mpnet.modeling_mpnet import MPNetEncoder  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jina_bert  # noqa: E402  (our JinaBERT: Jina's published remote code is not vendored)
from transformers.models.mpnet.modeling_mpnet import (  # noqa: E402
    create_position_ids_from_input_ids as mpnet_create_position_ids,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")

# --------------------------------------------------------------------------------------------
# Texts
# --------------------------------------------------------------------------------------------

LONG_LIGHTHOUSE = """Lighthouses have guided sailors along dangerous coasts for more than two thousand years. The earliest beacons were simple fires burning on hilltops or on the roofs of tall buildings near harbours, and keepers had to feed them with wood, coal or oil through the night. Over the centuries the towers grew taller and the lights grew brighter. In the early nineteenth century the French engineer Augustin Fresnel designed a lens made of concentric rings of glass prisms, which could gather the light of a single lamp and throw it as a narrow beam far out to sea. A good Fresnel lens could be seen from more than twenty nautical miles away on a clear night, and it quickly became the standard for lighthouses around the world.

Each lighthouse was given its own character so that sailors could tell them apart. Some flashed once every five seconds, others showed two short flashes followed by a long pause, and a few displayed coloured sectors that warned ships when they had strayed into shallow water. Captains carried printed lists describing every light on their route, and a careful navigator could fix the position of the ship simply by timing the flashes with a watch.

Life for the keepers was often lonely and hard. On remote rocks they might be cut off for weeks by storms, relying on stored food and rainwater. They trimmed wicks, polished brass, cleaned soot from the glass and wound the clockwork that turned the lens. Many kept detailed logbooks recording the weather, passing vessels and every small repair.

Today almost all lighthouses are automated. Electric lamps, solar panels and remote monitoring have replaced the keepers, and satellite navigation means that few ships depend on the lights alone. Yet the towers remain important landmarks, and many have been turned into museums, guest houses or nature reserves, where visitors can climb the spiral stairs and look out over the same waters that the old keepers watched for so long."""

LONG_BREAD = """Baking bread at home is a slow process that rewards patience more than skill. A basic loaf needs only four ingredients: flour, water, salt and yeast. When the flour is mixed with water, two proteins in the wheat join together to form gluten, a stretchy network that traps the gas produced by the yeast. Kneading the dough for ten minutes, or simply folding it a few times over several hours, strengthens this network so that the loaf can rise high without collapsing.

Sourdough bakers skip commercial yeast altogether and rely on a starter, a mixture of flour and water that has been left to ferment until wild yeasts and lactic acid bacteria settle in. The starter must be fed regularly, usually once or twice a day, and it develops a sour, slightly fruity smell. A spoonful of active starter added to a fresh dough will slowly raise it over twelve to eighteen hours, giving the finished bread a chewy crumb, a crisp crust and a mild tang.

Temperature matters a great deal. In a warm kitchen the dough may double in size within a few hours, while in a cold room it can take all night. Many bakers deliberately chill the shaped loaf in the refrigerator overnight, because the long, cool fermentation deepens the flavour and makes the dough easier to score with a sharp blade just before baking.

The oven should be very hot, often around 250 degrees Celsius, and a little steam during the first minutes helps the crust stay soft long enough for the loaf to expand. Some people bake inside a heavy cast-iron pot with a lid, which traps the moisture released by the dough. After about forty minutes the bread should sound hollow when tapped on the bottom. It is tempting to cut it immediately, but letting it cool for an hour allows the crumb to set and the flavour to settle."""

LONG_MULTILINGUAL = """Le petit village se trouve au bord d'une rivière tranquille, entouré de champs de blé et de vignes. Chaque samedi, les habitants se retrouvent sur la place du marché pour acheter du fromage, du pain frais et des légumes de saison.
El pequeño pueblo está junto a un río tranquilo, rodeado de campos de trigo y viñedos. Cada sábado, los vecinos se reúnen en la plaza del mercado para comprar queso, pan recién hecho y verduras de temporada.
这个小村庄坐落在一条安静的河边，周围是麦田和葡萄园。每个星期六，村民们都会聚集在市场广场上，购买奶酪、新鲜面包和时令蔬菜。
その小さな村は静かな川のほとりにあり、小麦畑とぶどう畑に囲まれています。毎週土曜日、村人たちは市場の広場に集まり、チーズや焼きたてのパン、旬の野菜を買います。
Маленькая деревня стоит на берегу тихой реки, окружённая пшеничными полями и виноградниками. Каждую субботу жители собираются на рыночной площади, чтобы купить сыр, свежий хлеб и сезонные овощи."""

LONG_ESSAY = """Search engines once relied almost entirely on matching the exact words in a query against the words in a document. If you typed "cheap flights to Rome", the engine looked for pages containing those words, perhaps giving extra weight to rare terms and to words that appeared in the title. This approach, built on inverted indexes and scoring formulas such as TF-IDF and BM25, is fast and surprisingly effective, and it still powers a large share of the world's search systems. Its weakness is that it knows nothing about meaning. A page that talks about "inexpensive airfare to Italy's capital" shares almost no words with the query, even though it answers it perfectly, and a page that mentions "Rome, Georgia" may score highly despite being about a different city altogether.

Sentence embeddings attack this problem from a different direction. Instead of comparing words, a neural network reads the whole sentence and produces a list of a few hundred numbers, called a vector, that summarises what the sentence is about. Sentences with similar meanings end up with vectors that point in similar directions, so the similarity between two texts can be measured by the cosine of the angle between their vectors. A model trained this way will place "cheap flights to Rome" close to "inexpensive airfare to Italy's capital" and far from "how to repair a bicycle chain", even though it was never told explicitly that these phrases are related.

Most modern embedding models are built on the transformer architecture. The input text is first split into tokens by a tokenizer, which breaks rare words into smaller pieces so that the vocabulary stays manageable. Each token is mapped to a learned vector, and a position vector is added so the model knows the order of the words. The vectors then pass through a stack of identical layers. In each layer, an attention mechanism lets every token look at every other token and gather information from the ones that matter most, and a small feed-forward network transforms the result. Layer normalisation and residual connections keep the numbers in a stable range as they flow through the stack. At the end, the model has one output vector per token, and a pooling step, often a simple average over all the tokens, collapses them into a single vector for the whole sentence.

Training such a model usually happens in two stages. First, a large network is pre-trained on enormous amounts of text with a self-supervised objective, for example by hiding some words and asking the model to guess them from the context. This teaches it grammar, facts and a rough sense of meaning. Second, the model is fine-tuned on pairs of sentences that are known to be related, such as questions and their answers, titles and their articles, or two captions describing the same photograph. The fine-tuning objective pulls the vectors of related pairs together and pushes unrelated sentences apart, and after many millions of such examples the geometry of the vector space starts to reflect meaning rather than surface form.

Running an embedding model in production raises practical questions that have little to do with machine learning. The tokenizer must behave exactly as it did during training, down to the treatment of accents, capital letters, unusual whitespace and characters from scripts the designers never thought about. Long documents must be truncated or split, because the model can only attend to a limited number of tokens at once. Numbers must be computed consistently across different processors, so that a vector computed today on one machine can be compared with a vector computed last year on another. Small differences in rounding are usually harmless, but a bug that silently drops a layer or mishandles padding can ruin search quality while every individual result still looks plausible.

For this reason, engineers who reimplement a model in a new language or on new hardware tend to test their work against a trusted reference. They collect a set of awkward inputs, run them through the original implementation, save the outputs, and check that the new code reproduces them within a tight tolerance. The inputs deliberately include empty strings, emoji, mixed scripts, control characters and texts far longer than the model's limit, because these are exactly the cases where two implementations that agree on ordinary sentences are most likely to diverge. When every case matches, the team can be confident that the new engine computes the same function as the old one, and only then does it make sense to start optimising for speed.

There is also the question of cost. A model with a few hundred million parameters can embed thousands of sentences per second on a modern graphics card, but many applications run on ordinary servers or even on laptops and phones, where memory and power are limited. Smaller models, distilled from larger ones, trade a little accuracy for a large gain in speed, and careful engineering of the matrix multiplications, the memory layout and the batching of requests can make an even bigger difference. Sorting a batch of inputs by length before padding them, for example, avoids wasting computation on padding tokens, while caching the embeddings of documents that rarely change means they never have to be computed twice.

Finally, embeddings are only one part of a retrieval system. The vectors must be stored in an index that can find the nearest neighbours of a query among millions of candidates in a few milliseconds, which usually means accepting approximate answers. The results are often re-ranked by a slower but more accurate model, combined with traditional keyword scores, filtered by date, language or permissions, and then presented to a user who will judge the whole system by whether the first few results are useful. Each of these steps can be tested separately, and each deserves the same attention to detail as the embedding model itself."""

MEDIUM = (
    "A medium-length sentence for testing truncation: the committee reviewed forty-two proposals "
    "over three long days, approved seventeen of them, asked for revisions on nine, and rejected "
    "the rest because their budgets were unclear or their timelines were unrealistic."
)


def boundary_text(n_words: int) -> str:
    """n_words copies of "a": exactly n_words word pieces in every vocab used here."""
    return " ".join(["a"] * n_words)


# The first 24 texts are the shared "core" set encoded by every reference (tiny and seeded
# SBERT-base encode core + their own two truncation-boundary texts). Order is part of the format.
CORE_TEXTS = [
    "",
    "   ",
    "\t\n",
    "The quick brown fox jumps over the lazy dog.",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
    "Crème brûlée à la café",
    "naïve façade Ångström",
    "我喜欢在周末去公园散步。",
    "東京は日本の首都です。ひらがなとカタカナ。",
    "안녕하세요, 만나서 반갑습니다.",
    "I love pizza 🍕🍕! Family: 👨\u200d👩\u200d👧\u200d👦, flags 🇺🇸🇯🇵🇩🇪, thumbs 👍🏽",
    "a\u0000b",
    "[CLS] [SEP] [MASK] [UNK]",
    LONG_LIGHTHOUSE,
    MEDIUM,
    'fn main() { let name = "Ember"; println!("Hello, {}!", name); }',
    "Total: $1,234.56 (€1.099,00) on 2024-03-15 at 14:30 UTC; ±3.5% ≈ ¥180,000 or £99.99",
    "Visit https://example.com/path?q=search&lang=en#frag or mail john.doe+tag@example.org",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "Привет, мир! Как дела у тебя сегодня?",
    "Die Straße ist sehr schön, und die Bäume blühen im Frühling.",
    "?!?!... --- ((([[[{{{<<<>>>}}}]]]))) !!! ??? ;;; ::: ,,, *** ~~~ ```",
    "hello hello hello hello hello world world world hello hello",
    LONG_ESSAY,
]

MORE_TEXTS = [
    "Hello",
    "a",
    "HeLLo WoRLd, ThIs Is MiXeD CaSe TeXt wItH iPhone and eBay",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "¿Dónde está la biblioteca? ¡Vamos a la playa mañana por la mañana!",
    "Ich möchte gerne einen Kaffee und ein Stück Kuchen, bitte.",
    "שלום עולם, מה שלומך היום?",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "สวัสดีครับ ยินดีที่ได้รู้จัก",
    "Γειά σου Κόσμε! ΟΔΟΣ ΣΟΦΟΣ και οδός",
    "İstanbul'da ISPARTA ıslak ışık",
    "ＡＢＣ１２３\u3000全角テキスト",
    "ﬁnance ﬂow ligatures ½ ² ℃ ™ Ⅻ",
    "e\u0301cole (decomposed) vs école (precomposed)",
    "zero\u200bwidth\u200cnon\u200djoiner, soft\u00adhyphen and \ufeffBOM",
    "line1\r\nline2\rline3\x0bvertical\x0cformfeed",
    "bell\x07 esc\x1b[31m red \x1b[0m del\x7f nel\u0085 nbsp\u00a0end",
    "replacement char \ufffd and private use \ue000 here",
    "𝐀𝐁𝐂 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝄞 music",
    "∑∫√∞ ≠ ≤ ≥ ∀x∈ℝ: x² ≥ 0",
    "def add(a, b):\n    # add two numbers\n    return a + b\n",
    "SELECT id, name FROM users WHERE age > 30 AND city = 'Oslo' ORDER BY name DESC LIMIT 10;",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}',
    "impl<T: Clone> Stack<T> { fn peek(&self) -> Option<&T> { self.items.last() } }",
    '<div class="note">Hello &amp; welcome</div>',
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a very long word.",
    "abcdefghij" * 12 + " is one word longer than 100 characters",
    "The year 1999 was followed by 2000; π ≈ 3.14159, e ≈ 2.71828, 10^6 = 1,000,000.",
    "Call +1 (555) 123-4567 or 0800-FLOWERS before 5pm.",
    "don't can't won't it's y'all rock'n'roll",
    "[CLS]hello[SEP]world[MASK]",
    "[cls] [sep] [mask] lowercase special tokens",
    "  leading and trailing spaces  ",
    "multiple     internal\t\tspaces\n\n\nand newlines",
    "😀😃😄😁😆😅😂🤣",
    "🏳️\u200d🌈 🏴\u200d☠️ 👩🏽\u200d💻 ❤️ ☺️",
    "中文和English混合的句子with数字123。",
    "日本語のテキストにはひらがな、カタカナ、漢字が含まれています。",
    "한국어 문장은 공백으로 단어를 구분합니다.",
    "Mixed scripts: Hello Привет Γειά مرحبا שלום 你好 こんにちは 안녕",
    "Sentence embeddings map text to dense vectors for semantic search.",
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "ALL CAPS SENTENCE WITH NUMBERS 123 AND SYMBOLS #@$%",
    "#hashtag @mention $TICKER %percent ^caret &amp *star",
    "C:\\Users\\name\\Documents\\file.txt and /usr/local/bin/ember",
    "user@example.com, admin@sub.domain.co.uk",
    "https://example.com/image.png",
    "Tab\tseparated\tvalues\t1\t2\t3",
    "One.Two.Three...Four....Five",
    "1234567890",
    "3.14159265358979323846264338327950288419716939937510",
    "Ünïcödé Ümläüts ÄÖÜ äöü ß ẞ",
    LONG_BREAD,
    LONG_MULTILINGUAL,
    " ".join(["na"] * 300) + " batman",
]

# (name, n_words): " ".join(["a"] * n) tokenizes to n pieces, so with [CLS]/[SEP] it is n + 2.
BOUNDARY_TEXTS = [
    ("tiny: exactly 40 tokens", 38),
    ("tiny: 41 tokens, truncated to 40", 39),
    ("sbert-base: exactly 75 tokens", 73),
    ("sbert-base: 76 tokens, truncated to 75", 74),
    ("minilm: exactly 256 tokens", 254),
    ("minilm: 257 tokens, truncated to 256", 255),
]


def all_texts() -> list[str]:
    texts = CORE_TEXTS + MORE_TEXTS + [boundary_text(n) for _, n in BOUNDARY_TEXTS]
    assert len(texts) == len(set(texts)), "duplicate texts"
    return texts


N_CORE = len(CORE_TEXTS)


def boundary_index(n_words: int) -> int:
    return N_CORE + len(MORE_TEXTS) + [n for _, n in BOUNDARY_TEXTS].index(n_words)


# --------------------------------------------------------------------------------------------
# JSON with exact f32 values
# --------------------------------------------------------------------------------------------


def f32_str(x) -> str:
    """Shortest decimal that round-trips to the same f32, also when parsed as f64 then cast."""
    v = np.float32(x)
    if not np.isfinite(v):
        raise ValueError(f"non-finite value {v!r}")
    s = str(v)  # numpy: shortest repr that uniquely identifies the float32
    if np.float32(float(s)) != v or (v == 0 and math.copysign(1, float(s)) != math.copysign(1, float(v))):
        s = repr(float(v))  # the exact f64 of the f32: casts back exactly
    return s


class F32Rows:
    """2-D float32 data, written one row per line."""

    def __init__(self, a):
        a = np.asarray(a)
        assert a.dtype == np.float32 and a.ndim == 2, (a.dtype, a.shape)
        self.a = a


class F32List:
    def __init__(self, a):
        a = np.asarray(a)
        assert a.dtype == np.float32 and a.ndim == 1, (a.dtype, a.shape)
        self.a = a


class IntRows:
    """List of int lists, one per line."""

    def __init__(self, rows):
        self.rows = [[int(v) for v in r] for r in rows]


class IntList:
    """1-D int list, written on one line."""

    def __init__(self, values):
        self.values = [int(v) for v in values]


class StrRows:
    def __init__(self, rows):
        self.rows = list(rows)


def _dump(obj, ind: int) -> str:
    pad = "  " * (ind + 1)
    end = "  " * ind
    if isinstance(obj, F32Rows):
        if len(obj.a) == 0:
            return "[]"
        return "[\n" + ",\n".join(pad + "[" + ",".join(f32_str(v) for v in row) + "]" for row in obj.a) + "\n" + end + "]"
    if isinstance(obj, F32List):
        return "[" + ",".join(f32_str(v) for v in obj.a) + "]"
    if isinstance(obj, IntRows):
        if not obj.rows:
            return "[]"
        return "[\n" + ",\n".join(pad + json.dumps(r) for r in obj.rows) + "\n" + end + "]"
    if isinstance(obj, IntList):
        return json.dumps(obj.values)
    if isinstance(obj, StrRows):
        if not obj.rows:
            return "[]"
        return "[\n" + ",\n".join(pad + json.dumps(s, ensure_ascii=False) for s in obj.rows) + "\n" + end + "]"
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [pad + json.dumps(str(k)) + ": " + _dump(v, ind + 1) for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, (list, tuple)):
        if all(isinstance(v, (str, int, float, bool)) or v is None for v in obj) and len(json.dumps(obj)) < 100:
            return json.dumps(list(obj), ensure_ascii=False)
        if not obj:
            return "[]"
        return "[\n" + ",\n".join(pad + _dump(v, ind + 1) for v in obj) + "\n" + end + "]"
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError("non-finite float")
        return repr(obj)
    return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj) -> None:
    text = _dump(obj, 0) + "\n"
    path.write_text(text, encoding="utf-8")
    json.loads(text)  # must be valid JSON


def check_f32_roundtrip(path: Path, key_path: list, expected: np.ndarray) -> None:
    """Re-read a fixture and verify the stored floats are bit-identical to what we computed."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for k in key_path:
        data = data[k]
    got = np.asarray(data, dtype=np.float64).astype(np.float32)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert np.array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32)), path


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }


def unpadded_input_ids(model: SentenceTransformer, texts: list[str], pad_id: int = 0,
                       prompt: str | None = None) -> list[list[int]]:
    """Token ids exactly as ST's encode() feeds them to the model, per text, without padding.

    Each text is preprocessed alone (so there is no padding) and, as a cross-check, the
    attention-masked rows of batched preprocessing (batch_size 16 as in encode) must agree
    (the padding being ``pad_id``: 0 for BERT's [PAD], 1 for RoBERTa's <pad>). ``prompt`` is the
    already resolved prompt string, passed to ``preprocess`` as encode() passes it.
    """
    single = []
    for t in texts:
        f = model.preprocess([t], prompt=prompt)
        ids = f["input_ids"][0].tolist()
        assert f["attention_mask"][0].tolist() == [1] * len(ids)
        if "token_type_ids" in f:
            assert f["token_type_ids"][0].tolist() == [0] * len(ids)
        single.append(ids)
    for s in range(0, len(texts), 16):
        f = model.preprocess(texts[s : s + 16], prompt=prompt)
        for i, (row, mask) in enumerate(zip(f["input_ids"].tolist(), f["attention_mask"].tolist())):
            n = sum(mask)
            assert mask == [1] * n + [0] * (len(mask) - n)
            assert row[:n] == single[s + i] and all(v == pad_id for v in row[n:])
    return single


def untruncated_counts(tokenizer_json: Path, texts: list[str]) -> list[int]:
    """Token counts (incl. [CLS]/[SEP]) before truncation, via the plain `tokenizers` library."""
    rt = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    rt.no_padding()
    rt.no_truncation()
    return [len(rt.encode(t).ids) for t in texts]


def encode(model: SentenceTransformer, texts: list[str]) -> np.ndarray:
    e = model.encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    assert e.dtype == np.float32 and e.shape[0] == len(texts)
    assert np.isfinite(e).all()
    return e


def loading_info(folder: Path, model_cls=BertModel) -> dict:
    _, info = model_cls.from_pretrained(str(folder), output_loading_info=True)
    return {k: sorted(map(str, v)) if not isinstance(v, dict) else v for k, v in info.items()}


def fsize(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def print_folder_files(folder: Path) -> None:
    """One line per file below ``folder``: its path, size and sha256 prefix."""
    for q in sorted(folder.rglob("*")):
        if q.is_file():
            print(f"      {q.relative_to(folder)}  {fsize(q):,}  sha256:{sha256(q)}")


FOLDER_ENCODE_CALL = "SentenceTransformer(folder, device='cpu').encode(texts, batch_size=16, convert_to_numpy=True)"


def run_info(encode_call: str = FOLDER_ENCODE_CALL) -> dict:
    """The keys every reference JSON starts with (after its "model"/"spec", where it has them)."""
    return {"versions": versions(), "torch_num_threads": torch.get_num_threads(), "encode_call": encode_call}


def checked_input_ids(model: SentenceTransformer, tokenizer_json: Path, texts: list[str], max_seq_length: int,
                      ends: tuple[int, int] | None = None, pad_id: int = 0,
                      prompt: str | None = None) -> tuple[list[list[int]], list[int], list[int]]:
    """``unpadded_input_ids``, their lengths and the untruncated token counts, checked: ST adds
    nothing on top of the plain `tokenizers` pipeline of tokenizer.json + truncation to
    ``max_seq_length``, every row is ``min(untruncated, max_seq_length)`` long and (with ``ends``)
    starts and ends with those two ids. With a (resolved, non-empty) ``prompt``, that pipeline
    runs on the string ``prompt + text``, and the counts are of that string."""
    ids = unpadded_input_ids(model, texts, pad_id=pad_id, prompt=prompt)
    joined = [(prompt or "") + t for t in texts]
    rt = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    rt.no_padding()
    rt.enable_truncation(max_length=max_seq_length)
    for t, row in zip(joined, ids):
        assert rt.encode(t).ids == row, t
    lens = [len(r) for r in ids]
    full = untruncated_counts(tokenizer_json, joined)
    assert all(n == min(f, max_seq_length) for n, f in zip(lens, full))
    if ends is not None:
        assert all(r[0] == ends[0] and r[-1] == ends[1] for r in ids), ends
    return ids, lens, full


def encode_checked(model: SentenceTransformer, texts: list[str], normalized: bool) -> tuple[np.ndarray, float]:
    """``encode`` (batches of 16) and the max |batched - one-at-a-time| difference, which must be
    below 1e-5; with ``normalized`` every embedding must have unit L2 norm."""
    emb = encode(model, texts)
    single = np.stack([encode(model, [t])[0] for t in texts])
    diff_single = float(np.abs(single - emb).max())
    assert diff_single < 1e-5, diff_single
    if normalized:
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        assert np.all(np.abs(norms - 1) < 1e-5), norms
    return emb, diff_single


def st_forward_kwargs(m: SentenceTransformer, texts: list[str]) -> list[list[str]]:
    """The keyword names of each call that ST's Transformer makes to the model's forward while
    encoding ``texts`` (no positional arguments allowed). ST calls model.forward(**kwargs) itself,
    past nn.Module hooks, so the bound method is wrapped on the instance for one call."""
    hf = m[0].auto_model
    seen = []
    bound = hf.forward

    def spy(*args, **kwargs):
        seen.append((len(args), sorted(kwargs)))
        return bound(*args, **kwargs)

    hf.forward = spy
    try:
        encode(m, texts)
    finally:
        del hf.forward
    assert seen and all(n == 0 for n, _ in seen), seen
    return [k for _, k in seen]


def hidden_states(model, ids: list[int], token_types: bool = False, **kwargs) -> torch.Tensor:
    """A plain transformers model's last hidden state [n, hidden] for one unpadded sequence
    (attention mask all ones; with ``token_types``, token_type_ids all zeros, as BERT's tokenizer
    gives them)."""
    t = torch.tensor([ids])
    if token_types:
        kwargs["token_type_ids"] = torch.zeros_like(t)
    return model(input_ids=t, attention_mask=torch.ones_like(t), **kwargs).last_hidden_state[0]


def pool_f64(hidden: torch.Tensor, pooling: tuple[str, ...], normalize: bool) -> np.ndarray:
    """CLS or mean pooling of one unpadded sequence [n, hidden] (then L2 normalisation), in f64."""
    assert pooling in (("cls",), ("mean",)), pooling
    x = hidden.double()
    v = x[0] if pooling == ("cls",) else x.mean(0)
    if normalize:
        v = v / v.norm()
    return v.numpy()


def load_st_folder(folder: Path, max_seq_length: int, modules: list[str], pooling_mode: str, model_type: str,
                   state: dict | None = None) -> SentenceTransformer:
    """The folder loaded by sentence-transformers as a complete model: its module chain, pooling,
    max_seq_length and model_type as written, and (given ``state``) every generated tensor reached
    the model unchanged (nothing re-initialised on load)."""
    m = SentenceTransformer(str(folder), device="cpu")
    assert m.max_seq_length == max_seq_length, m.max_seq_length
    assert [type(x).__name__ for x in m] == modules, [type(x).__name__ for x in m]
    assert m[1].pooling_mode == pooling_mode, m[1].pooling_mode
    hf = m[0].auto_model.eval()
    assert hf.config.model_type == model_type, hf.config.model_type
    if state is not None:
        sd = hf.state_dict()
        for name, t in state.items():
            assert torch.equal(sd[name], t), name
    return m


def position_model_entry(model_type: str, seed: int, vocab_size: int, modes: tuple[str, ...], normalize: bool,
                         ids: list[list[int]], positions: list[list[int]], full: list[int], emb: np.ndarray) -> dict:
    """One model of tiny_roberta_reference.json / tiny_mpnet_reference.json."""
    return {
        "model_type": model_type,
        "seed": seed,
        "vocab_size": vocab_size,
        "pooling_mode": list(modes),
        "normalize": normalize,
        "input_ids": IntRows(ids),
        "position_ids": IntRows(positions),
        "num_tokens_untruncated": full,
        "embeddings": F32Rows(emb),
    }


def write_models_reference(path: Path, max_seq_length: int, texts: list[str], models: dict,
                           hidden_size: int | None = None, **extra) -> None:
    """A reference JSON of several folders encoded on the same texts (run_info, max_seq_length,
    hidden_size if given, texts, models, then ``extra``), re-read to check every embedding."""
    out = run_info() | {"max_seq_length": max_seq_length}
    if hidden_size is not None:
        out["hidden_size"] = hidden_size
    out |= {"texts": StrRows(texts), "models": models} | extra
    write_json(path, out)
    for folder, entry in models.items():
        check_f32_roundtrip(path, ["models", folder, "embeddings"], entry["embeddings"].a)


# --------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2
# --------------------------------------------------------------------------------------------


def make_minilm(minilm_dir: Path, texts: list[str]) -> dict:
    print(f"[minilm] transformers load report: {loading_info(minilm_dir)}")
    model = SentenceTransformer(str(minilm_dir), device="cpu")
    msl = model.max_seq_length
    tok = model.tokenizer
    print(f"[minilm] modules: {[type(m).__name__ for m in model]}; max_seq_length={msl}; "
          f"tokenizer={type(tok).__name__} model_max_length={tok.model_max_length}")
    raw = json.loads((minilm_dir / "tokenizer.json").read_text())
    print(f"[minilm] tokenizer.json says truncation={raw['truncation']} padding={raw['padding']}")
    assert msl == 256 and tok.model_max_length == 256

    ids, lens, full = checked_input_ids(model, minilm_dir / "tokenizer.json", texts, msl, ends=(101, 102))
    assert max(lens) == msl
    assert lens[boundary_index(254)] == 256 and lens[boundary_index(255)] == 256
    assert ids[boundary_index(255)][-2] == 1037  # truncation cuts content, then re-appends [SEP]

    emb, diff = encode_checked(model, texts, normalized=True)
    print(f"[minilm] {len(texts)} texts; token counts min {min(lens)} max {max(lens)}; "
          f"truncated: {sum(n > msl for n in full)}; "
          f"max |batched - one-at-a-time| = {diff:.3g}")
    out = {
        "model": "all-MiniLM-L6-v2",
        **run_info("SentenceTransformer(dir, device='cpu').encode(texts, batch_size=16, convert_to_numpy=True)"),
        "max_seq_length": msl,
        "normalized": True,
        "dim": int(emb.shape[1]),
        "max_abs_diff_batched_vs_single": diff,
        "texts": StrRows(texts),
        "num_tokens_untruncated": full,
        "input_ids": IntRows(ids),
        "embeddings": F32Rows(emb),
    }
    path = FIXTURES / "minilm_reference.json"
    write_json(path, out)
    check_f32_roundtrip(path, ["embeddings"], emb)
    return {"max_seq_length": msl, "diff": diff}


# --------------------------------------------------------------------------------------------
# Tiny random BERTs
# --------------------------------------------------------------------------------------------

TINY = {
    # folder: (hidden_act, seed)
    "tiny-bert": ("gelu", 0),
    "tiny-bert-gelu-new": ("gelu_new", 1),
    "tiny-bert-relu": ("relu", 2),
}
TINY_HIDDEN = 52
TINY_MAX_SEQ = 40
TINY_N_WORDS = 1000
TINY_N_SUFFIXES = 500


def tiny_vocab(minilm_vocab: Path) -> list[str]:
    """Reduced WordPiece vocab taken from bert-base-uncased's (MiniLM's) vocab.txt.

    Keeps ids 0..103 unchanged ([PAD]=0, [unused0..98], [UNK]=100, [CLS]=101, [SEP]=102,
    [MASK]=103), drops [unused99..993], then keeps all single characters (original ids
    999..1995), the first 1000 whole words and the first 500 "##" pieces (in original order,
    interleaved as in the original), then any missing "##<ascii letter or digit>" pieces so that
    any lowercase ASCII word can be split. Words containing characters outside it become [UNK].
    """
    orig = minilm_vocab.read_text(encoding="utf-8").split("\n")
    if orig[-1] == "":
        orig.pop()
    assert len(orig) == 30522 and orig[100] == "[UNK]" and orig[103] == "[MASK]"
    assert orig[998] == "[unused993]" and orig[999] == "!" and orig[1996] == "the"
    vocab = orig[:104] + orig[999:1996]
    words = suffixes = 0
    for tokn in orig[1996:]:
        if tokn.startswith("##"):
            if suffixes < TINY_N_SUFFIXES:
                vocab.append(tokn)
                suffixes += 1
        elif words < TINY_N_WORDS:
            vocab.append(tokn)
            words += 1
        if words == TINY_N_WORDS and suffixes == TINY_N_SUFFIXES:
            break
    have = set(vocab)
    for c in "abcdefghijklmnopqrstuvwxyz0123456789":
        if "##" + c not in have:
            assert "##" + c in orig
            vocab.append("##" + c)
    assert len(vocab) == len(set(vocab))
    return vocab


def pooling_config(dim: int, modes: tuple[str, ...], full_legacy: bool) -> dict:
    cfg = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": "cls" in modes,
        "pooling_mode_mean_tokens": "mean" in modes,
        "pooling_mode_max_tokens": "max" in modes,
        "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens" in modes,
    }
    if full_legacy:
        cfg["pooling_mode_weightedmean_tokens"] = "weightedmean" in modes
        cfg["pooling_mode_lasttoken"] = "lasttoken" in modes
        cfg["include_prompt"] = True
    return cfg


def write_st_files(folder: Path, max_seq_length: int, pooling_cfg: dict, normalize: bool = False,
                   dense: bool = False) -> None:
    """modules.json (Transformer, Pooling, then a ``2_Dense`` entry if ``dense``, then Normalize if
    ``normalize``), sentence_bert_config.json and 1_Pooling/config.json. The 2_Dense folder itself
    is written by ``write_dense``."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if normalize:
        # As published models list it (all-MiniLM-L6-v2): Normalize has no files, so there is
        # no 2_Normalize (or, after a Dense, 3_Normalize) folder.
        k = len(modules)
        modules.append({"idx": k, "name": str(k), "path": f"{k}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2) + "\n"
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2) + "\n")


BERT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                       "mask_token": "[MASK]"}
BERT_SPECIAL_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def roberta_special_tokens(unk: str) -> dict:
    """special_tokens_map.json of the <s> ... </s> tokenizers (RoBERTa, XLM-R: unk "<unk>"; MPNet:
    unk "[UNK]", as all-mpnet-base-v2's)."""
    return {"bos_token": "<s>", "eos_token": "</s>", "unk_token": unk, "sep_token": "</s>",
            "pad_token": "<pad>", "cls_token": "<s>", "mask_token": "<mask>"}


def fresh_folder(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def random_model(model_cls, config, seed: int, std: dict[str, float] | None = None,
                 norm_suffixes: tuple[str, ...] = ("LayerNorm.weight", "layer_norm.weight")):
    """``model_cls(config)`` built after ``torch.manual_seed(seed)``, then every parameter
    re-randomised so that every term of the forward pass matters: LayerNorm affine terms, biases and
    the padding_idx rows of the embedding tables (zero at init) included. The draws come from a
    ``torch.Generator`` seeded ``1000 + seed`` in sorted parameter-name order (the committed weights
    depend on that order): LayerNorm weights (DistilBERT's ``*layer_norm.weight`` too; whatever
    ends with one of ``norm_suffixes``) ``1 + 0.1 N(0, 1)``, biases ``0.1 N(0, 1)``, everything
    else ``0.2 N(0, 1)``, except the parameters named in ``std``, drawn as ``std[name] * N(0, 1)``."""
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    gen = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if std and name in std:
                p.copy_(std[name] * torch.randn(p.shape, generator=gen))
            elif name.endswith(norm_suffixes):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def save_st_folder(folder: Path, model, tokenizer, special_tokens: dict, max_seq_length: int, pooling_cfg: dict,
                   normalize: bool = False, dense: bool = False, vocab: list[str] | None = None) -> None:
    """A complete sentence-transformers folder: the weights (model.safetensors) and config.json, the
    tokenizer's files, ``vocab`` as vocab.txt (one entry a line) if given, our own
    special_tokens_map.json and the ST files of ``write_st_files``."""
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    if vocab is not None:
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2) + "\n")
    write_st_files(folder, max_seq_length, pooling_cfg, normalize=normalize, dense=dense)


def check_st_folder(folder: Path, model_cls=BertModel, state: dict | None = None) -> list[str]:
    """transformers loads the folder with no missing, unexpected or mismatched weight, it stays
    small, and (given the ``state`` that was saved) model.safetensors holds exactly those tensors.
    Returns the sorted tensor names of model.safetensors."""
    info = loading_info(folder, model_cls)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert not info.get("conversion_errors"), info
    assert fsize(folder) < 1_000_000, fsize(folder)
    with safetensors.safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
        if state is not None:
            assert names == sorted(state), (names, sorted(state))
            for n in names:
                assert torch.equal(f.get_tensor(n), state[n]), n
    return names


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def added_token_ids(tokenizer_json: dict) -> dict[str, int]:
    return {a["content"]: a["id"] for a in tokenizer_json["added_tokens"]}


def build_tiny(folder: Path, vocab: list[str], hidden_act: str, seed: int) -> None:
    fresh_folder(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=TINY_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=76,
        hidden_act=hidden_act,
        max_position_embeddings=64,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        position_embedding_type="absolute",
        architectures=["BertModel"],
    )
    model = random_model(BertModel, config, seed)
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=512)
    save_st_folder(folder, model, tok, BERT_SPECIAL_TOKENS, TINY_MAX_SEQ,
                   pooling_config(TINY_HIDDEN, ("mean",), full_legacy=True), vocab=vocab)
    check_st_folder(folder)
    # The saved tokenizer must use our vocab with the special ids of the original.
    tj = read_json(folder / "tokenizer.json")
    assert added_token_ids(tj) == BERT_SPECIAL_IDS
    assert tj["model"]["vocab"] == {t: i for i, t in enumerate(vocab)}


def numpy_pool(tok_emb: np.ndarray, modes) -> np.ndarray:
    """Independent f64 re-implementation of ST pooling for one unpadded sequence [n, d]."""
    x = tok_emb.astype(np.float64)
    n = x.shape[0]
    out = []
    for m in modes:
        if m == "cls":
            out.append(x[0])
        elif m == "max":
            out.append(x.max(0))
        elif m == "mean":
            out.append(x.sum(0) / n)
        elif m == "mean_sqrt_len_tokens":
            out.append(x.sum(0) / math.sqrt(n))
        elif m == "weightedmean":
            w = np.arange(1, n + 1, dtype=np.float64)
            out.append((x * w[:, None]).sum(0) / w.sum())
        elif m == "lasttoken":
            out.append(x[-1])
    return np.concatenate(out)


def make_tiny(minilm_dir: Path, texts: list[str]) -> dict:
    vocab = tiny_vocab(minilm_dir / "vocab.txt")
    for folder, (act, seed) in TINY.items():
        build_tiny(FIXTURES / folder, vocab, act, seed)

    idx = list(range(N_CORE)) + [boundary_index(38), boundary_index(39)]
    sub = [texts[i] for i in idx]

    # The folders load as complete ST models: mean pooling, max_seq_length 40 from sentence_bert_config.
    direct = {}
    for folder in TINY:
        m = load_st_folder(FIXTURES / folder, TINY_MAX_SEQ, ["Transformer", "Pooling"], "mean", "bert")
        direct[folder] = encode(m, sub)
        if folder == "tiny-bert":
            ids, lens, full = checked_input_ids(m, FIXTURES / folder / "tokenizer.json", sub, TINY_MAX_SEQ,
                                                ends=(101, 102))
    assert max(lens) == TINY_MAX_SEQ and lens[-2] == 40 and lens[-1] == 40 and ids[-1][-2] == vocab.index("a")
    n_unk = sum(r.count(100) for r in ids)

    combos = []  # (folder, modes, normalize)
    for k in range(1, len(POOLING_MODES) + 1):
        for subset in itertools.combinations(POOLING_MODES, k):
            combos.append(("tiny-bert", subset, False))
    combos += [
        ("tiny-bert", ("mean",), True),
        ("tiny-bert", ("cls", "max", "mean"), True),
        ("tiny-bert", ("max", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"), True),
        ("tiny-bert", ("max", "cls"), False),
        ("tiny-bert", ("lasttoken", "weightedmean", "cls", "mean"), False),
    ]
    for folder in ("tiny-bert-gelu-new", "tiny-bert-relu"):
        combos += [(folder, ("mean",), False), (folder, ("cls", "max", "mean"), False)]

    transformers_by_folder = {
        folder: Transformer(str(FIXTURES / folder), max_seq_length=TINY_MAX_SEQ) for folder in TINY
    }
    for t in transformers_by_folder.values():
        assert t.max_seq_length == TINY_MAX_SEQ

    # Token embeddings of each text alone (no padding) for an independent check of pooling.
    bert = transformers_by_folder["tiny-bert"].auto_model.eval()
    tok_embs = []
    with torch.inference_mode():
        for r in ids:
            tok_embs.append(hidden_states(bert, r, token_types=True).numpy())

    cases = []
    worst_numpy = 0.0
    for folder, modes, normalize in combos:
        modules = [transformers_by_folder[folder], Pooling(TINY_HIDDEN, pooling_mode=list(modes))]
        if normalize:
            modules.append(Normalize())
        m = SentenceTransformer(modules=modules, device="cpu")
        emb = encode(m, sub)
        assert emb.shape == (len(sub), TINY_HIDDEN * len(modes))
        if folder == "tiny-bert":
            ref = np.stack([numpy_pool(te, modes) for te in tok_embs])
            if normalize:
                ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
            err = float(np.abs(ref - emb).max())
            worst_numpy = max(worst_numpy, err)
            assert err < 1e-4, (modes, normalize, err)
        if modes == ("mean",) and not normalize:
            assert np.array_equal(emb, direct[folder]), folder
        cases.append({"folder": folder, "pooling_mode": list(modes), "normalize": normalize,
                      "embeddings": F32Rows(emb)})

    # ST 6 keeps a non-canonical mode order: the output is the canonical blocks, permuted.
    canon = {tuple(c["pooling_mode"]): c["embeddings"].a for c in cases
             if c["folder"] == "tiny-bert" and not c["normalize"]}
    n_permuted = 0
    for c in cases:
        modes = tuple(c["pooling_mode"])
        canon_modes = tuple(m for m in POOLING_MODES if m in modes)
        if c["folder"] != "tiny-bert" or c["normalize"] or modes == canon_modes:
            continue
        ref = canon[canon_modes]
        blocks = {m: ref[:, k * TINY_HIDDEN:(k + 1) * TINY_HIDDEN] for k, m in enumerate(canon_modes)}
        assert np.array_equal(c["embeddings"].a, np.concatenate([blocks[m] for m in modes], axis=1)), modes
        n_permuted += 1
    assert n_permuted == 2

    out = {
        **run_info("SentenceTransformer(modules=[Transformer(folder, max_seq_length=40), "
                   "Pooling(52, pooling_mode=modes)(, Normalize())], device='cpu')"
                   ".encode(texts, batch_size=16, convert_to_numpy=True)"),
        "max_seq_length": TINY_MAX_SEQ,
        "hidden_size": TINY_HIDDEN,
        "folders": {f: {"hidden_act": a, "seed": s} for f, (a, s) in TINY.items()},
        "text_indices": idx,
        "texts": StrRows(sub),
        "num_tokens_untruncated": full,
        "input_ids": IntRows(ids),
        "cases": cases,
    }
    path = FIXTURES / "tiny_reference.json"
    write_json(path, out)
    data = json.loads(path.read_text(encoding="utf-8"))
    for c_json, c in zip(data["cases"], cases):
        got = np.asarray(c_json["embeddings"], dtype=np.float64).astype(np.float32)
        assert np.array_equal(got.view(np.uint32), c["embeddings"].a.view(np.uint32))
    print(f"[tiny] vocab {len(vocab)}; {len(cases)} cases x {len(sub)} texts; token counts "
          f"{min(lens)}..{max(lens)}; [UNK] tokens {n_unk}; "
          f"max |ST - numpy pooling of unpadded token embeddings| = {worst_numpy:.3g}")
    return {"vocab": len(vocab), "cases": len(cases), "texts": len(sub), "numpy_err": worst_numpy}


# --------------------------------------------------------------------------------------------
# Tiny random RoBERTa and XLM-RoBERTa
# --------------------------------------------------------------------------------------------

ROBERTA = {
    # folder: (model_type, seed, pooling modes, Normalize)
    "tiny-roberta": ("roberta", 10, ("mean",), False),
    "tiny-xlm-roberta": ("xlm-roberta", 11, ("cls",), True),
}
RB_HIDDEN = 48
RB_MAX_SEQ = 40
RB_MAX_POS = 66  # RoBERTa positions start at pad_token_id + 1 = 2: 64 usable rows
RB_PAD = 1
RB_TRAINED_VOCAB = 1500  # trained entries incl. the four specials; "<mask>" is appended last
RB_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in roberta-base and xlm-roberta-base
# "<mask>" absorbs the whitespace before it (lstrip), as in roberta-base's and xlm-roberta-base's
# tokenizer.json.
RB_MASK = tokenizers.AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
WORDNET_CORPUS = REPO / "benches" / "corpus" / "wordnet-examples.txt"

# Texts that only the RoBERTa fixture encodes (after the core texts and two boundary texts).
RB_EDGE_TEXTS = [
    # Literal specials: a <pad> token takes position row pad_token_id and later tokens shift.
    "left <pad> right <s> end",
    "<pad><pad><pad> three pads, then text, then <pad> <pad> <pad> spaced pads",
    "fill <mask> here, </s> and <unk> too",
    # Accents, emoji and CJK (some characters unseen in training: <unk> for the Unigram model).
    "Café naïve Ångström — 東京で鮨を食べた 🦀🍣😀 한국어!",
    # Truncated to 40 tokens with a literal <pad> first: every later position is shifted.
    "<pad> " + LONG_BREAD,
]


def roberta_texts() -> list[str]:
    """Core texts, " a" x 38 (exactly 40 tokens in both models) and x 39 (41, truncated), edges."""
    texts = CORE_TEXTS + [boundary_text(38), boundary_text(39)] + RB_EDGE_TEXTS
    assert len(texts) == len(set(texts)), "duplicate texts"
    return texts


def tokenizer_corpus() -> list[str]:
    """What both tokenizers are trained on: every text of texts.json plus the WordNet bench corpus."""
    lines = [ln for ln in WORDNET_CORPUS.read_text(encoding="utf-8").split("\n") if ln]
    assert len(lines) == 1244, len(lines)
    return all_texts() + lines


def train_bpe_tokenizer(corpus: list[str]) -> RobertaTokenizerFast:
    """Byte-level BPE trained with `tokenizers` (deterministic), wrapped as a RobertaTokenizer.

    The trainer's vocab keeps <s>, <pad>, </s>, <unk> at ids 0..3, then the 256 byte symbols,
    then merges; "<mask>" (lstrip) is appended as the last id, as in roberta-base.
    """
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=RB_TRAINED_VOCAB, min_frequency=2, special_tokens=RB_SPECIALS, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    assert len(vocab) == RB_TRAINED_VOCAB and [t for t, i in vocab.items() if i < 4] == RB_SPECIALS
    vocab["<mask>"] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return RobertaTokenizerFast(vocab=vocab, merges=merges, model_max_length=RB_MAX_POS - 2,
                                mask_token=RB_MASK)


def unigram_words(corpus: list[str], pre_tokenizer) -> list[tuple[str, int]]:
    counts = collections.Counter()
    for text in corpus:
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(text))
    return sorted(counts.items())


def unigram_viterbi(word: str, logp: dict[str, float], max_len: int, unk: float) -> list[str]:
    n = len(word)
    best = [0.0] + [-math.inf] * n
    back = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - max_len), end):
            piece = word[start:end]
            s = logp.get(piece, unk if end - start == 1 else None)
            if s is not None and best[start] + s > best[end]:
                best[end], back[end] = best[start] + s, start
    pieces = []
    end = n
    while end > 0:
        pieces.append(word[back[end]:end])
        end = back[end]
    return pieces[::-1]


def train_unigram_tokenizer(corpus: list[str]) -> XLMRobertaTokenizerFast:
    """SentencePiece-style Unigram tokenizer wrapped as an XLMRobertaTokenizer.

    `tokenizers`' UnigramTrainer picks the pieces (with XLMRobertaTokenizer's own pre-tokenizer:
    WhitespaceSplit then Metaspace "▁", prepend always; no normalizer, as transformers rebuilds
    XLMRobertaTokenizer without one unless tokenizer.json holds a Precompiled charsmap). The
    trainer's EM sums in a per-process hash order, so its scores (and hence its id order) vary
    in the last digits from run to run, while its piece set does not; the scores are therefore
    re-estimated here deterministically (3 rounds of Viterbi EM over the sorted word counts,
    starting from substring counts) and the pieces ordered by score, then text. Ids: <s>, <pad>,
    </s>, <unk> = 0..3, the pieces, "<mask>" (lstrip) last (as in xlm-roberta-base).
    """
    pre = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.WhitespaceSplit(),
        tokenizers.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
    ])
    piece_sets = []
    for _ in range(2):  # the piece set must not depend on the trainer's run-to-run noise
        tok = tokenizers.Tokenizer(tokenizers.models.Unigram())
        tok.pre_tokenizer = pre
        trainer = tokenizers.trainers.UnigramTrainer(
            vocab_size=RB_TRAINED_VOCAB, special_tokens=RB_SPECIALS, unk_token="<unk>", show_progress=False)
        tok.train_from_iterator(corpus, trainer=trainer)
        vocab = json.loads(tok.to_str())["model"]["vocab"]
        assert [p for p, _ in vocab[:4]] == RB_SPECIALS, vocab[:4]
        piece_sets.append(sorted(p for p, _ in vocab[4:]))
    assert piece_sets[0] == piece_sets[1], "UnigramTrainer's piece set changed between two runs"
    pieces = piece_sets[0]
    assert len(pieces) == RB_TRAINED_VOCAB - 4, len(pieces)

    words = unigram_words(corpus, pre)
    max_len = max(len(p) for p in pieces)
    counts = dict.fromkeys(pieces, 0)
    for w, f in words:
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + max_len) + 1):
                if w[i:j] in counts:
                    counts[w[i:j]] += f

    def log_probs(counts: dict[str, int]) -> dict[str, float]:
        total = sum(counts.values()) + 0.5 * len(counts)
        return {p: math.log((c + 0.5) / total) for p, c in counts.items()}

    for _ in range(3):
        logp = log_probs(counts)
        unk = min(logp.values()) - 10.0
        counts = dict.fromkeys(pieces, 0)
        for w, f in words:
            for p in unigram_viterbi(w, logp, max_len, unk):
                if p in counts:
                    counts[p] += f
    logp = log_probs(counts)
    scored = sorted(((p, round(s, 6)) for p, s in logp.items()), key=lambda ps: (-ps[1], ps[0]))
    vocab = [(t, 0.0) for t in RB_SPECIALS] + scored + [("<mask>", 0.0)]
    return XLMRobertaTokenizerFast(vocab=vocab, model_max_length=RB_MAX_POS - 2, mask_token=RB_MASK)


def roberta_position_ids(ids: list[int], pad: int = RB_PAD) -> list[int]:
    """transformers' create_position_ids_from_input_ids, restated: a <pad> token takes row pad,
    any other token row pad + (number of non-<pad> tokens up to and including it)."""
    out, c = [], 0
    for t in ids:
        if t == pad:
            out.append(pad)
        else:
            c += 1
            out.append(pad + c)
    return out


def build_tiny_roberta(folder: Path, model_type: str, seed: int, tokenizer, modes, normalize: bool,
                       normalizer: list[str] | None = None) -> dict:
    fresh_folder(folder)
    config_cls, model_cls = {"roberta": (RobertaConfig, RobertaModel),
                             "xlm-roberta": (XLMRobertaConfig, XLMRobertaModel)}[model_type]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=RB_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=80,
        hidden_act="gelu",
        max_position_embeddings=RB_MAX_POS,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=RB_PAD,
        bos_token_id=0,
        eos_token_id=2,
        position_embedding_type="absolute",
        architectures=[model_cls.__name__],
    )
    assert config.model_type == model_type
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2, 3, len(tokenizer) - 1]
    # Re-randomised as build_tiny's (the padding_idx rows of the word and position tables too).
    model = random_model(model_cls, config, seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    save_st_folder(folder, model, tokenizer, roberta_special_tokens("<unk>"), RB_MAX_SEQ,
                   pooling_config(RB_HIDDEN, modes, full_legacy=True), normalize=normalize)
    check_st_folder(folder, model_cls, state)
    tj = read_json(folder / "tokenizer.json")
    assert added_token_ids(tj) == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(tokenizer) - 1}
    assert [a["lstrip"] for a in tj["added_tokens"]] == [False] * 4 + [True]
    if model_type == "roberta":
        assert tj["normalizer"] is None and tj["model"]["type"] == "BPE"
        assert tj["pre_tokenizer"]["type"] == "ByteLevel" and not tj["pre_tokenizer"]["add_prefix_space"]
        assert tj["post_processor"]["type"] == "RobertaProcessing"
        assert tj["post_processor"]["cls"] == ["<s>", 0] and tj["post_processor"]["sep"] == ["</s>", 2]
    else:
        assert tj["model"]["type"] == "Unigram" and tj["model"]["unk_id"] == 3
        if normalizer is None:
            assert tj["normalizer"] is None
            assert [p["type"] for p in tj["pre_tokenizer"]["pretokenizers"]] == ["WhitespaceSplit", "Metaspace"]
        else:
            assert [n["type"] for n in tj["normalizer"]["normalizers"]] == normalizer, tj["normalizer"]
            assert tj["pre_tokenizer"]["type"] == "Metaspace", tj["pre_tokenizer"]
        assert tj["post_processor"]["type"] == "TemplateProcessing"
    return {"state": state, "n_params": sum(v.numel() for v in state.values())}


def make_roberta() -> dict:
    corpus = tokenizer_corpus()
    toks = {"tiny-roberta": train_bpe_tokenizer(corpus), "tiny-xlm-roberta": train_unigram_tokenizer(corpus)}
    texts = roberta_texts()
    models_out = {}
    summary = {}
    for folder, (model_type, seed, modes, normalize) in ROBERTA.items():
        models_out[folder], summary[folder] = roberta_folder(folder, model_type, seed, toks[folder], modes,
                                                             normalize, texts)
    write_models_reference(FIXTURES / "tiny_roberta_reference.json", RB_MAX_SEQ, texts, models_out, RB_HIDDEN)
    return {"texts": texts, "summary": summary}


def roberta_folder(folder: str, model_type: str, seed: int, tokenizer, modes, normalize: bool,
                   texts: list[str], normalizer: list[str] | None = None) -> tuple[dict, dict]:
    """Builds one tiny RoBERTa-family folder, encodes ``texts`` (which include RB_EDGE_TEXTS and
    the two boundary texts) with sentence-transformers and checks it; returns its reference entry
    and a summary. ``normalizer``: the types tokenizer.json's normalizer Sequence must hold (None:
    no normalizer)."""
    path = FIXTURES / folder
    pad_text = texts.index(RB_EDGE_TEXTS[0])
    built = build_tiny_roberta(path, model_type, seed, tokenizer, modes, normalize, normalizer)
    assert len(modes) == 1
    m = load_st_folder(path, RB_MAX_SEQ, ["Transformer", "Pooling"] + ["Normalize"] * normalize, modes[0],
                       model_type, built["state"])
    hf = m[0].auto_model
    assert type(hf).__name__ == {"roberta": "RobertaModel", "xlm-roberta": "XLMRobertaModel"}[model_type]
    feats = m.preprocess(texts[:2])
    st_keys = sorted(feats)
    assert "token_type_ids" not in feats, st_keys  # RoBERTa tokenizers return none

    ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, RB_MAX_SEQ, ends=(0, 2), pad_id=RB_PAD)
    assert lens[N_CORE] == RB_MAX_SEQ and full[N_CORE] == RB_MAX_SEQ  # " a" x 38: exactly 40
    assert full[N_CORE + 1] == RB_MAX_SEQ + 1 and lens[N_CORE + 1] == RB_MAX_SEQ  # x 39: cut
    assert any(f > RB_MAX_SEQ for f in full), "no truncated text"
    assert any(RB_PAD in r for r in ids), "no literal <pad> token"
    assert ids[pad_text].count(RB_PAD) == 1 and ids[pad_text].count(0) == 2
    last_edge = texts.index(RB_EDGE_TEXTS[-1])
    assert ids[last_edge][1] == RB_PAD and lens[last_edge] == RB_MAX_SEQ  # <pad> first, then truncated

    positions = [roberta_position_ids(r) for r in ids]
    for r, pos in zip(ids, positions):
        hf_pos = hf.embeddings.create_position_ids_from_input_ids(torch.tensor([r]), RB_PAD)
        assert hf_pos[0].tolist() == pos
    assert max(max(p) for p in positions) < RB_MAX_POS

    emb, diff_single = encode_checked(m, texts, normalize)

    # Independent recomputation: the folder loaded afresh as a plain transformers model, each
    # <pad>-containing text alone, attention mask all ones, pooled here; and the same with
    # naive positions (2, 3, 4, ...), which must give a clearly different embedding.
    plain = type(hf).from_pretrained(str(path)).eval()
    checks = {}
    with torch.inference_mode():
        for i in [pad_text, last_edge]:
            out = hidden_states(plain, ids[i])
            naive = hidden_states(plain, ids[i], position_ids=torch.arange(2, lens[i] + 2)[None])
            assert torch.equal(out, hidden_states(plain, ids[i], position_ids=torch.tensor([positions[i]])))
            err = float(np.abs(pool_f64(out, modes, normalize) - emb[i]).max())
            err_naive = float(np.abs(pool_f64(naive, modes, normalize) - emb[i]).max())
            assert err < 1e-5, (folder, i, err)
            assert err_naive > 1e-3, (folder, i, err_naive)
            checks[i] = (err, err_naive)

    entry = position_model_entry(model_type, seed, len(tokenizer), modes, normalize, ids, positions, full, emb)
    summary = {"lens": lens, "full": full, "checks": checks, "diff_single": diff_single,
               "n_unk": sum(r.count(3) for r in ids), "n_pad": sum(r.count(RB_PAD) for r in ids),
               "size": fsize(path), "params": built["n_params"], "st_keys": st_keys}
    print(f"[roberta] {folder}: {model_type}, vocab {len(tokenizer)}, {built['n_params']:,} params, "
          f"{fsize(path):,} bytes; {len(texts)} texts, token counts {min(lens)}..{max(lens)}, "
          f"truncated {sum(f > RB_MAX_SEQ for f in full)}, <pad> tokens {summary['n_pad']}, "
          f"<unk> tokens {summary['n_unk']}; ST features {st_keys}; "
          f"max |batched - one-at-a-time| = {diff_single:.3g}; plain-torch check "
          + ", ".join(f"text {i}: |diff| {e:.3g} (naive positions {n:.3g})" for i, (e, n) in checks.items()))
    return entry, summary


# --------------------------------------------------------------------------------------------
# Tiny random XLM-R with a real SentencePiece tokenizer (nmt_nfkc charsmap)
# --------------------------------------------------------------------------------------------

XLMR_SPM_FOLDER = "tiny-xlmr-spm"
XS_SEED = 12
XS_PIECES = 2000  # the SentencePiece model's pieces (<unk>, <s>, </s> + 1,997); 2,002 ids after conversion

# Texts that only tiny-xlmr-spm encodes, after roberta_texts(): what the nmt_nfkc charsmap, the
# right Strip and the " {2,}" -> "▁" Replace of transformers' XLMRobertaConverter act on.
XS_EXTRA_TEXTS = [
    "Ｆｕｌｌｗｉｄｔｈ ＬＥＴＴＥＲＳ １２３ and ｶﾀｶﾅ ﾊﾟﾝ halfwidth kana",
    "ligatures ﬁne ﬂow ﬀ, circled ① ② ⑳, powers x² y³ ½ ¼, ™ № ℃ ㎏ ㍻",
    "combining cafe\u0301 vs café, n\u0303 a\u0308\u0304 o\u0328\u0301 e\u0301\u0301\u0301\u0301\u0301\u0301",
    "spaces:  two   three\u00a0nbsp\u3000ideographic\u2003em\u2009thin   ",
    "zero\u200bwidth, joiner\u200d, soft\u00adhyphen, tab\tnewline\ncarriage\r\nend\u0001ctl",
    "Ｈａｎｇｕｌ 한국어 jamo \u1112\u1161\u11ab\u1100\u116e\u11a8\u110b\u1165 \u110b\u1165, emoji 👩🏽\u200d💻 🇫🇷 ❤\ufe0f 1\ufe0f\u20e3",
    "Ǆ ǅ ǆ ĳ, roman Ⅻ ⅻ, Å K µ ſ ﹏ ︵ «quotes» ``backticks'' „low“",
    "   \u3000 leading spaces and trailing ones \u00a0  ",
]


def xlmr_spm_texts() -> list[str]:
    texts = roberta_texts() + XS_EXTRA_TEXTS
    assert len(texts) == len(set(texts)), "duplicate texts"
    return texts


def train_spm_tokenizer(corpus: list[str]) -> XLMRobertaTokenizerFast:
    """A SentencePiece Unigram model trained by sentencepiece itself (nmt_nfkc normalisation, the
    default, as xlm-roberta-base's; one thread, so the model is the same bytes on every run), then
    converted as transformers converts xlm-roberta-base's sentencepiece.bpe.model:
    XLMRobertaConverter gives the fairseq id layout (<s>, <pad>, </s>, <unk> = 0..3, the pieces,
    "<mask>" last), the Precompiled charsmap + right Strip + Replace(" {2,}" -> "▁") normaliser
    and the Metaspace pre-tokeniser."""
    import io
    import sentencepiece as spm
    from transformers.convert_slow_tokenizer import XLMRobertaConverter

    def train() -> bytes:
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, vocab_size=XS_PIECES,
                                       model_type="unigram", normalization_rule_name="nmt_nfkc",
                                       character_coverage=0.9995, num_threads=1, minloglevel=2)
        return buf.getvalue()

    model = train()
    assert train() == model, "sentencepiece's model changed between two runs"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sentencepiece.bpe.model"
        path.write_bytes(model)

        class Slow:  # what XLMRobertaConverter reads of a slow XLMRobertaTokenizer
            vocab_file = str(path)
            add_prefix_space = True
            legacy = True

            def convert_tokens_to_ids(self, token: str) -> int:
                return RB_SPECIALS.index(token)

        fast = XLMRobertaConverter(Slow()).converted()
    vocab = json.loads(fast.to_str())["model"]["vocab"]
    assert [p for p, _ in vocab[:4]] == RB_SPECIALS and vocab[-1][0] == "<mask>", vocab[:5]
    assert len(vocab) == XS_PIECES + 2 and len({p for p, _ in vocab}) == len(vocab)
    return XLMRobertaTokenizerFast(tokenizer_object=fast, model_max_length=RB_MAX_POS - 2, mask_token=RB_MASK)


def make_xlmr_spm() -> dict:
    tokenizer = train_spm_tokenizer(tokenizer_corpus())
    texts = xlmr_spm_texts()
    entry, summary = roberta_folder(XLMR_SPM_FOLDER, "xlm-roberta", XS_SEED, tokenizer, ("mean",), True, texts,
                                    normalizer=["Precompiled", "Strip", "Replace"])
    # The normaliser must matter: the same texts through the pipeline without it give other ids.
    tj = read_json(FIXTURES / XLMR_SPM_FOLDER / "tokenizer.json")
    plain = dict(tj, normalizer=None)
    rt = tokenizers.Tokenizer.from_str(json.dumps(plain))
    changed = [i for i, t in enumerate(XS_EXTRA_TEXTS) if rt.encode(t).ids != tokenizers.Tokenizer.from_file(
        str(FIXTURES / XLMR_SPM_FOLDER / "tokenizer.json")).encode(t).ids]
    assert changed == list(range(len(XS_EXTRA_TEXTS))), changed
    write_models_reference(FIXTURES / "tiny_xlmr_spm_reference.json", RB_MAX_SEQ, texts,
                           {XLMR_SPM_FOLDER: entry}, RB_HIDDEN)
    return {"texts": texts, "summary": summary}


# --------------------------------------------------------------------------------------------
# Tiny random NomicBERT (nomic-embed-text-v1 / v1.5's architecture)
# --------------------------------------------------------------------------------------------

NOMIC_FOLDER = "tiny-nomic-bert"
NOMIC = {
    # folder: (seed, rope theta, published nomic-ai keys that differ from transformers' own)
    NOMIC_FOLDER: (40, 1000.0, {}),
    # Another theta (in rope_parameters), and stale published keys that transformers ignores
    # (its own keys win), so Ember must too.
    "tiny-nomic-bert-theta": (41, 7777.0, {"rotary_emb_base": 5.0, "n_inner": 999, "layer_norm_epsilon": 0.1}),
}
NB_HIDDEN = 48
NB_HEADS = 4  # head_dim 12
NB_MAX_SEQ = 128
NB_MAX_POS = 160  # the rotary cache's length; positions are plain indices 0..n-1
NB_THETA = 1000.0  # nomic-embed-text-v1.5's rotary_emb_base (NomicBertConfig's default theta)


def build_tiny_nomic(folder: Path, vocab: list[str], seed: int, theta: float, stale: dict) -> dict:
    """transformers 5's native NomicBertModel (post-LayerNorm layers, rotary positions with
    rotate_half, no biases in attention or MLP, SwiGLU feed-forward, token-type table, no
    position table), saved by save_pretrained, which writes the published checkpoint names
    (emb_ln, encoder.layers.{i}.attn.Wqkv / out_proj, mlp.fc11 (up) / fc12 (gate) / fc2, norm1,
    norm2): transformers' conversion mapping renames them back on load. config.json gets the
    published nomic-ai config keys (n_embd, n_head, ..., rotary_emb_base, activation_function
    "swiglu") beside transformers' own, with the same values except those in ``stale``."""
    fresh_folder(folder)
    config = NomicBertConfig(
        vocab_size=len(vocab),
        hidden_size=NB_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=NB_HEADS,
        intermediate_size=80,
        max_position_embeddings=NB_MAX_POS,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        architectures=["NomicBertModel"],
    )
    assert config.model_type == "nomic_bert" and config.hidden_act == "silu"
    model = random_model(NomicBertModel, config, seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert not any(k.endswith(".bias") and "LayerNorm" not in k and "layernorm" not in k for k in state), \
        sorted(state)
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=8192)
    save_st_folder(folder, model, tok, BERT_SPECIAL_TOKENS, NB_MAX_SEQ,
                   pooling_config(NB_HIDDEN, ("mean",), full_legacy=True), normalize=True)
    cfg = read_json(folder / "config.json")
    cfg |= {"activation_function": "swiglu", "n_embd": NB_HIDDEN, "n_head": NB_HEADS, "n_inner": 80, "n_layer": 2,
            "n_positions": NB_MAX_POS, "layer_norm_epsilon": 1e-12, "rotary_emb_base": theta,
            "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "rotary_scaling_factor": None,
            "prenorm": False, "qkv_proj_bias": False, "mlp_fc1_bias": False, "mlp_fc2_bias": False,
            "use_rms_norm": False, "parallel_block": False, "causal": False} | stale
    write_json(folder / "config.json", cfg)
    with safetensors.safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
        stored = {n: f.get_tensor(n) for n in names}
    assert "emb_ln.weight" in names and "encoder.layers.0.attn.Wqkv.weight" in names, names
    assert "encoder.layers.1.mlp.fc12.weight" in names and "encoder.layers.1.norm2.bias" in names, names
    # The published layout, checked against the native state: Wqkv = [q; k; v], fc11 = up, fc12 = gate.
    for i in range(2):
        sa, mlp, st = f"layers.{i}.self_attn", f"layers.{i}.mlp", f"encoder.layers.{i}"
        assert torch.equal(stored[f"{st}.attn.Wqkv.weight"],
                           torch.cat([state[f"{sa}.{p}_proj.weight"] for p in "qkv"]))
        assert torch.equal(stored[f"{st}.mlp.fc11.weight"], state[f"{mlp}.up_proj.weight"])
        assert torch.equal(stored[f"{st}.mlp.fc12.weight"], state[f"{mlp}.gate_proj.weight"])
    info = loading_info(folder, NomicBertModel)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert fsize(folder) < 1_000_000, fsize(folder)
    return {"state": state, "n_params": sum(v.numel() for v in state.values()), "weight_names": names}


def make_nomic() -> dict:
    vocab = committed_tiny_bert_vocab()
    texts = mpnet_texts()
    models_out = {}
    for folder, (seed, theta, stale) in NOMIC.items():
        path = FIXTURES / folder
        built = build_tiny_nomic(path, vocab, seed, theta, stale)
        m = load_st_folder(path, NB_MAX_SEQ, ["Transformer", "Pooling", "Normalize"], "mean", "nomic_bert",
                           built["state"])
        hf = m[0].auto_model
        assert type(hf).__name__ == "NomicBertModel"
        assert hf.config.intermediate_size == 80 and hf.config.layer_norm_eps == 1e-12  # stale keys ignored
        hd = NB_HIDDEN // NB_HEADS
        want = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        assert torch.equal(hf.rotary_emb.inv_freq, want), (hf.rotary_emb.inv_freq, want)
        ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, NB_MAX_SEQ, ends=(101, 102))
        assert sum(f > NB_MAX_SEQ for f in full) >= 1 and max(lens) == NB_MAX_SEQ
        emb, diff_single = encode_checked(m, texts, True)

        # Independent recomputation: the plain NomicBertModel, each text alone, pooled here in
        # f64; and mutations that must each move the embedding by more than 1e-3: (a) no rotary
        # positions (position_ids all 0), (b) token type 1 instead of 0, (c) (theta folder) the
        # default theta 1000 instead of its own.
        plain = NomicBertModel.from_pretrained(str(path)).eval()
        other_theta = None
        if theta != NB_THETA:
            other_theta = NomicBertModel.from_pretrained(
                str(path), rope_parameters={"rope_type": "default", "rope_theta": NB_THETA}).eval()
        checks = {}
        with torch.inference_mode():
            for i in [0, texts.index(MP_EXTRA_TEXTS[-1])]:
                out = hidden_states(plain, ids[i], token_types=True)
                err = float(np.abs(pool_f64(out, ("mean",), True) - emb[i]).max())
                no_rope = hidden_states(plain, ids[i], token_types=True,
                                        position_ids=torch.zeros(1, lens[i], dtype=torch.long))
                t = torch.tensor([ids[i]])
                type1 = plain(input_ids=t, attention_mask=torch.ones_like(t),
                              token_type_ids=torch.ones_like(t)).last_hidden_state[0]
                mutated = [no_rope, type1]
                if other_theta is not None:
                    mutated.append(hidden_states(other_theta, ids[i], token_types=True))
                moved = [float(np.abs(pool_f64(x, ("mean",), True) - emb[i]).max()) for x in mutated]
                assert err < 1e-5, (folder, i, err)
                assert min(moved) > 1e-3, (folder, i, moved)
                checks[i] = (err, moved)
        models_out[folder] = position_model_entry("nomic_bert", seed, len(vocab), ("mean",), True, ids,
                                                  [list(range(n)) for n in lens], full, emb)
        print(f"[nomic] {folder}: theta {theta}, {built['n_params']:,} params, {fsize(path):,} bytes; "
              f"{len(texts)} texts, token counts {min(lens)}..{max(lens)}, truncated "
              f"{sum(f > NB_MAX_SEQ for f in full)}; max |batched - one-at-a-time| = {diff_single:.3g}; "
              f"plain-torch checks {checks}")
    write_models_reference(FIXTURES / "tiny_nomic_reference.json", NB_MAX_SEQ, texts, models_out, NB_HIDDEN)
    return {"texts": texts}


# --------------------------------------------------------------------------------------------
# Tiny random GTE (gte-base-en-v1.5 / gte-multilingual-base's architecture)
# --------------------------------------------------------------------------------------------

GTE_HIDDEN = 48
GTE_HEADS = 4  # head_dim 12
GTE_FFN = 80
GTE_MAX_SEQ = 128
GTE_MAX_POS = 160
GTE = {
    # folder: (seed, tokenizer, type_vocab_size, rope theta (None: GteConfig's default 160000),
    #          NTK factor (model_type "new" only), pooling, normalize)
    # gte-base-en-v1.5's kind: BERT WordPiece, no token-type table, CLS pooling; weights under
    # the "gte." prefix of transformers' own task heads (GteForMaskedLM's backbone).
    "tiny-gte": (50, "bert", 0, 10000.0, None, ("cls",), False),
    # gte-multilingual-base's kind: XLM-R's tokenizer (class from model_type "gte"), one token
    # type, the default theta, weights under a "new." prefix, mean pooling + Normalize.
    "tiny-gte-multilingual": (51, "xlmr", 1, None, None, ("mean",), True),
    # Alibaba-NLP's published format (model_type "new", read by their remote code): NewConfig's
    # keys with the fixed NTK scaling of gte-base-en-v1.5 ({"type": "ntk", "factor": 2.0}).
    "tiny-gte-new": (52, "bert", 2, 2000.0, 2.0, ("mean",), False),
}


def ntk_inverse_frequencies(theta: float, factor: float, hd: int) -> torch.Tensor:
    """The inverse frequencies of Alibaba-NLP's published ``NTKScalingRotaryEmbedding`` (fixed
    NTK, no ``mixed_b``; https://kexue.fm/archives/9706 eq. (6)): those of ``theta * factor``,
    each divided by ``factor ** (2 / hd)``. Its tables are built for max_position_embeddings *
    factor positions, past max_position_embeddings whenever factor > 1, so this always holds."""
    base = theta * factor
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2).float() / hd))
    return inv_freq / factor ** (2 / hd)


def build_tiny_gte(folder: Path, seed: int, tokenizer: str, types: int, theta: float | None,
                   ntk: float | None, modes: tuple[str, ...], normalize: bool) -> dict:
    """transformers 5's native GteModel (BERT's post-LayerNorm layers with rotary positions,
    biases on q/k/v/o and down_proj, ``down(gelu(gate(x)) * up(x))``, embeddings = LayerNorm(word
    (+ token type)), no position table), saved by save_pretrained, which writes Alibaba-NLP's
    published names (encoder.layer.{i}.attention.qkv_proj / o_proj, attn_ln, mlp.up_gate_proj
    ([up; gate]), mlp.down_proj, mlp_ln): transformers' conversion mapping renames them back on
    load. ``ntk``: config.json is then rewritten as Alibaba-NLP's NewConfig (model_type "new",
    rope_theta, rope_scaling, pack_qkv, ...), which transformers cannot load without their
    remote code; the reference for it is the native model with the NTK frequencies."""
    fresh_folder(folder)
    if tokenizer == "bert":
        vocab = committed_tiny_bert_vocab()
        tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=8192)
        specials, vocab_size = BERT_SPECIAL_TOKENS, len(vocab)
    else:
        tok = XLMRobertaTokenizerFast.from_pretrained(str(FIXTURES / XLMR_SPM_FOLDER))
        specials, vocab_size = roberta_special_tokens("<unk>"), len(tok)
    config = GteConfig(
        vocab_size=vocab_size,
        hidden_size=GTE_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=GTE_HEADS,
        intermediate_size=GTE_FFN,
        max_position_embeddings=GTE_MAX_POS,
        type_vocab_size=types,
        layer_norm_eps=1e-12,
        rope_parameters=None if theta is None else {"rope_type": "default", "rope_theta": theta},
        architectures=["GteModel"],
    )
    assert config.model_type == "gte" and config.hidden_act == "gelu"
    model = random_model(GteModel, config, seed)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(f"layers.0.{n}.bias" in state for n in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"))
    assert "layers.0.mlp.up_proj.bias" not in state and "layers.0.mlp.gate_proj.bias" not in state
    assert ("embeddings.token_type_embeddings.weight" in state) == (types > 0)
    save_st_folder(folder, model, tok, specials, GTE_MAX_SEQ,
                   pooling_config(GTE_HIDDEN, modes, full_legacy=True), normalize=normalize)
    with safetensors.safe_open(str(folder / "model.safetensors"), "pt") as f:
        stored = {n: f.get_tensor(n) for n in f.keys()}
    assert "encoder.layer.0.attention.qkv_proj.weight" in stored and "encoder.layer.1.mlp_ln.bias" in stored
    # The published layout, checked against the native state: qkv_proj = [q; k; v],
    # up_gate_proj = [up; gate] (no bias).
    for i in range(2):
        sa, mlp, st = f"layers.{i}.self_attn", f"layers.{i}.mlp", f"encoder.layer.{i}"
        assert torch.equal(stored[f"{st}.attention.qkv_proj.weight"],
                           torch.cat([state[f"{sa}.{p}_proj.weight"] for p in "qkv"]))
        assert torch.equal(stored[f"{st}.mlp.up_gate_proj.weight"],
                           torch.cat([state[f"{mlp}.up_proj.weight"], state[f"{mlp}.gate_proj.weight"]]))
        assert f"{st}.mlp.up_gate_proj.bias" not in stored
    # A task head's prefix: "gte." (transformers' GteForMaskedLM) on tiny-gte, "new." (Alibaba-NLP's
    # NewForMaskedLM) on tiny-gte-multilingual; transformers strips either on load.
    prefix = {"tiny-gte": "gte.", "tiny-gte-multilingual": "new."}.get(folder.name)
    if prefix is not None:
        safetensors.torch.save_file({f"{prefix}{n}": t for n, t in stored.items()}, str(folder / "model.safetensors"),
                                    metadata={"format": "pt"})
    if tokenizer == "xlmr":
        # No tokenizer_class: AutoTokenizer takes model_type "gte"'s, XLMRobertaTokenizer.
        tc = read_json(folder / "tokenizer_config.json")
        del tc["tokenizer_class"]
        write_json(folder / "tokenizer_config.json", tc)
    if ntk is None:
        info = loading_info(folder, GteModel)
        assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    # tiny-xlmr-spm's tokenizer.json alone is 447 kB.
    assert fsize(folder) < (1_000_000 if tokenizer == "bert" else 1_100_000), fsize(folder)
    return {"state": state, "n_params": sum(v.numel() for v in state.values()),
            "vocab_size": vocab_size, "config": read_json(folder / "config.json")}


def as_new_config(native: dict, theta: float, ntk: float) -> dict:
    """GteConfig's config.json rewritten as Alibaba-NLP's NewConfig writes one (gte-base-en-v1.5's
    keys and order), with ``theta`` and the fixed NTK ``ntk`` factor."""
    keys = ["attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
            "initializer_range", "intermediate_size", "layer_norm_eps", "max_position_embeddings",
            "num_attention_heads", "num_hidden_layers", "pad_token_id", "type_vocab_size", "vocab_size"]
    return {"architectures": ["NewModel"],
            "auto_map": {"AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
                         "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel"},
            "classifier_dropout": None, "layer_norm_type": "layer_norm", "logn_attention_clip1": False,
            "logn_attention_scale": False, "model_type": "new", "pack_qkv": True,
            "position_embedding_type": "rope", "rope_scaling": {"factor": ntk, "type": "ntk"},
            "rope_theta": theta, "torch_dtype": "float32", "transformers_version": "4.39.1",
            "unpad_inputs": False, "use_memory_efficient_attention": False} | {k: native[k] for k in keys}


def make_gte() -> dict:
    texts = mpnet_texts()
    models_out = {}
    for folder, (seed, tokenizer, types, theta, ntk, modes, normalize) in GTE.items():
        path = FIXTURES / folder
        built = build_tiny_gte(path, seed, tokenizer, types, theta, ntk, modes, normalize)
        modules = ["Transformer", "Pooling"] + (["Normalize"] if normalize else [])
        m = load_st_folder(path, GTE_MAX_SEQ, modules, modes[0], "gte", built["state"])
        hf = m[0].auto_model
        assert type(hf).__name__ == "GteModel"
        tok_class = type(m[0].tokenizer).__name__
        assert tok_class == ("BertTokenizer" if tokenizer == "bert" else "XLMRobertaTokenizer"), tok_class
        hd = GTE_HIDDEN // GTE_HEADS
        want_theta = 160000.0 if theta is None else theta
        want = 1.0 / (want_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        assert torch.equal(hf.rotary_emb.inv_freq, want), (hf.rotary_emb.inv_freq, want)
        if ntk is not None:
            scaled = ntk_inverse_frequencies(theta, ntk, hd)
            assert not torch.equal(scaled, want)
            hf.rotary_emb.inv_freq.copy_(scaled)
            hf.rotary_emb.original_inv_freq.copy_(scaled)
        ends = (101, 102) if tokenizer == "bert" else (0, 2)
        ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, GTE_MAX_SEQ, ends=ends,
                                            pad_id=0 if tokenizer == "bert" else 1)
        assert sum(f > GTE_MAX_SEQ for f in full) >= 1 and max(lens) == GTE_MAX_SEQ
        emb, diff_single = encode_checked(m, texts, normalize)

        # Independent recomputation: the plain GteModel, each text alone, pooled here in f64;
        # and mutations that must each move the embedding by more than 1e-3: (a) no rotary
        # positions, (b) (with a token-type table) token type 1, (c) gate and up swapped,
        # (d) (NTK, the longer text) the unscaled frequencies.
        checks = {}
        with torch.inference_mode():
            for i in [0, texts.index(MP_EXTRA_TEXTS[-1])]:
                out = hidden_states(hf, ids[i])
                err = float(np.abs(pool_f64(out, modes, normalize) - emb[i]).max())
                t = torch.tensor([ids[i]])
                mutated = [hf(input_ids=t, attention_mask=torch.ones_like(t),
                              position_ids=torch.zeros_like(t)).last_hidden_state[0]]
                if types > 1:
                    mutated.append(hf(input_ids=t, attention_mask=torch.ones_like(t),
                                      token_type_ids=torch.ones_like(t)).last_hidden_state[0])
                for layer in hf.layers:
                    layer.mlp.up_proj, layer.mlp.gate_proj = layer.mlp.gate_proj, layer.mlp.up_proj
                mutated.append(hidden_states(hf, ids[i]))
                for layer in hf.layers:
                    layer.mlp.up_proj, layer.mlp.gate_proj = layer.mlp.gate_proj, layer.mlp.up_proj
                if ntk is not None and lens[i] > 16:  # (2 tokens barely rotate)
                    scaled = hf.rotary_emb.inv_freq.clone()
                    hf.rotary_emb.inv_freq.copy_(want)
                    mutated.append(hidden_states(hf, ids[i]))
                    hf.rotary_emb.inv_freq.copy_(scaled)
                moved = [float(np.abs(pool_f64(x, modes, normalize) - emb[i]).max()) for x in mutated]
                assert err < 1e-5, (folder, i, err)
                assert min(moved) > 1e-3, (folder, i, moved)
                checks[i] = (err, moved)
        if ntk is not None:
            write_json(path / "config.json", as_new_config(built["config"], theta, ntk))
            try:
                AutoConfig.from_pretrained(str(path))
                raise AssertionError("transformers loaded a model_type \"new\" config without remote code")
            except ValueError:
                pass
        entry = position_model_entry("new" if ntk is not None else "gte", seed, built["vocab_size"], modes,
                                     normalize, ids, [list(range(n)) for n in lens], full, emb)
        models_out[folder] = entry | {"rope_theta": want_theta, "ntk_factor": ntk}
        print(f"[gte] {folder}: theta {want_theta}, ntk {ntk}, {built['n_params']:,} params, {fsize(path):,} bytes; "
              f"{len(texts)} texts, token counts {min(lens)}..{max(lens)}, truncated "
              f"{sum(f > GTE_MAX_SEQ for f in full)}; max |batched - one-at-a-time| = {diff_single:.3g}; "
              f"plain-torch checks {checks}")
    write_models_reference(FIXTURES / "tiny_gte_reference.json", GTE_MAX_SEQ, texts, models_out, GTE_HIDDEN)
    return {"texts": texts}


# --------------------------------------------------------------------------------------------
# Tiny random JinaBERT (jina-embeddings-v2-small-en / -base-en's architecture)
# --------------------------------------------------------------------------------------------

JINA_HIDDEN = 48
JINA_FFN = 80
JINA_MAX_SEQ = 128
JINA_MAX_POS = 512
JINA = {
    # folder: (seed, heads, feed_forward_type, weight-name prefix, pooling, normalize)
    # jina-embeddings-v2-base-en's kind: GEGLU, a head count that is not a power of two (base-en
    # has 12: ALiBi's slopes then interleave two geometric series), mean pooling.
    "tiny-jina": (60, 6, "geglu", "", ("mean",), False),
    # ReGLU, 8 heads (small-en's count: one geometric series), the "bert." prefix of Jina's
    # JinaBertForMaskedLM, mean pooling + Normalize.
    "tiny-jina-reglu": (61, 8, "reglu", "bert.", ("mean",), True),
    # JinaBertConfig's default feed_forward_type "original": BERT's intermediate/output with
    # hidden_act (gelu_new here); CLS pooling.
    "tiny-jina-original": (62, 4, "original", "", ("cls",), False),
}


def jina_published_config(heads: int, ffn: str, vocab_size: int) -> dict:
    """config.json as Jina publishes it (jina-embeddings-v2-small-en's keys and order)."""
    impl = "jinaai/jina-bert-implementation--"
    return {"_name_or_path": "jinaai/jina-bert-implementation", "architectures": ["JinaBertForMaskedLM"],
            "attention_probs_dropout_prob": 0.0, "attn_implementation": "torch",
            "auto_map": {"AutoConfig": impl + "configuration_bert.JinaBertConfig",
                         "AutoModel": impl + "modeling_bert.JinaBertModel",
                         "AutoModelForMaskedLM": impl + "modeling_bert.JinaBertForMaskedLM",
                         "AutoModelForSequenceClassification": impl + "modeling_bert.JinaBertForSequenceClassification"},
            "classifier_dropout": None, "emb_pooler": "mean", "feed_forward_type": ffn,
            "gradient_checkpointing": False, "hidden_act": "gelu_new" if ffn == "original" else "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": JINA_HIDDEN, "initializer_range": 0.02,
            "intermediate_size": JINA_FFN, "layer_norm_eps": 1e-12, "max_position_embeddings": JINA_MAX_POS,
            "model_max_length": 8192, "model_type": "bert", "num_attention_heads": heads, "num_hidden_layers": 2,
            "pad_token_id": 0, "position_embedding_type": "alibi", "torch_dtype": "float32",
            "transformers_version": "4.26.0", "type_vocab_size": 2, "use_cache": True, "vocab_size": vocab_size}


def jina_hidden_f64(stored: dict, cfg: dict, ids: list[int], token_type: int = 0, slopes=None,
                    swap_glu: bool = False) -> torch.Tensor:
    """JinaBERT's last hidden state [n, H] of one sequence, computed here in f64 straight from the
    checkpoint's tensors (``stored``, names without a prefix), independently of jina_bert.py:
    ``slopes`` replaces ALiBi's (a mutation), ``swap_glu`` swaps the GLU's gate and up halves."""
    w = {k: v.double() for k, v in stored.items()}
    h, nh, f = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"]
    hd, eps, n = h // nh, cfg["layer_norm_eps"], len(ids)

    def ln(x, name):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    def lin(x, name, bias=True):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y

    def gelu(x, tanh=False):
        if tanh:
            return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    x = ln(w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][token_type],
           "embeddings.LayerNorm")
    pos = torch.arange(n)
    dist = (pos[None, :] - pos[:, None]).abs().double()
    s = torch.tensor(jina_bert.alibi_slopes(nh) if slopes is None else slopes, dtype=torch.float64)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q, k, v = (lin(x, f"{p}.attention.self.{m}").reshape(n, nh, hd).transpose(0, 1)
                   for m in ("query", "key", "value"))
        scores = q @ k.transpose(1, 2) / math.sqrt(hd) - s[:, None, None] * dist
        ctx = (torch.softmax(scores, -1) @ v).transpose(0, 1).reshape(n, h)
        a = ln(lin(ctx, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
        if cfg["feed_forward_type"] == "original":
            y = lin(gelu(lin(a, f"{p}.intermediate.dense"), tanh=True), f"{p}.output.dense")
            x = ln(y + a, f"{p}.output.LayerNorm")
        else:
            g = lin(a, f"{p}.mlp.gated_layers", bias=False)
            gate, up = (g[:, f:], g[:, :f]) if swap_glu else (g[:, :f], g[:, f:])
            act = gelu(gate) if cfg["feed_forward_type"] == "geglu" else torch.relu(gate)
            x = ln(lin(act * up, f"{p}.mlp.wo") + a, f"{p}.mlp.layernorm")
    return x


def build_tiny_jina(folder: Path, seed: int, heads: int, ffn: str, prefix: str, modes: tuple[str, ...],
                    normalize: bool) -> dict:
    """A JinaBERT (jina_bert.py) with every parameter re-randomised, saved under the published
    names (embeddings without a position table, BERT's attention names, mlp.gated_layers / wo /
    layernorm or BERT's intermediate / output, a pooler) and Jina's config.json."""
    fresh_folder(folder)
    vocab = committed_tiny_bert_vocab()
    cfg = jina_published_config(heads, ffn, len(vocab))
    # transformers 5 takes "attn_implementation" for its own (and refuses "torch"): the folder
    # gets Jina's config.json once the reference is made (make_jina), this one until then.
    loadable = {k: v for k, v in cfg.items() if k not in ("_name_or_path", "auto_map", "attn_implementation")}
    config = BertConfig(**loadable)
    assert config.position_embedding_type == "alibi" and config.feed_forward_type == ffn
    model = random_model(jina_bert.JinaBertModel, config, seed,
                         norm_suffixes=("LayerNorm.weight", "layernorm.weight"))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    glu = ffn != "original"
    assert ("encoder.layer.1.mlp.gated_layers.weight" in state) == glu
    assert "encoder.layer.0.mlp.gated_layers.bias" not in state and "pooler.dense.weight" in state
    assert not any("position_embeddings" in k for k in state)
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=8192)
    save_st_folder(folder, model, tok, BERT_SPECIAL_TOKENS, JINA_MAX_SEQ,
                   pooling_config(JINA_HIDDEN, modes, full_legacy=True), normalize=normalize)
    write_json(folder / "config.json", loadable)
    with safetensors.safe_open(str(folder / "model.safetensors"), "pt") as f:
        stored = {n: f.get_tensor(n) for n in f.keys()}
    assert sorted(stored) == sorted(state), (sorted(stored), sorted(state))
    if prefix:
        safetensors.torch.save_file({f"{prefix}{n}": t for n, t in stored.items()}, str(folder / "model.safetensors"),
                                    metadata={"format": "pt"})
    assert fsize(folder) < 1_000_000, fsize(folder)
    return {"state": state, "stored": stored, "config": cfg, "vocab_size": len(vocab),
            "n_params": sum(v.numel() for v in state.values())}


def make_jina() -> dict:
    texts = mpnet_texts()
    models_out = {}
    jina_bert.register()
    try:
        for folder, (seed, heads, ffn, prefix, modes, normalize) in JINA.items():
            path = FIXTURES / folder
            built = build_tiny_jina(path, seed, heads, ffn, prefix, modes, normalize)
            info = loading_info(path, jina_bert.JinaBertModel)
            assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
            modules = ["Transformer", "Pooling"] + (["Normalize"] if normalize else [])
            m = load_st_folder(path, JINA_MAX_SEQ, modules, modes[0], "bert", built["state"])
            assert type(m[0].auto_model).__name__ == "JinaBertModel", type(m[0].auto_model)
            assert type(m[0].tokenizer).__name__ == "BertTokenizer", type(m[0].tokenizer)
            ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, JINA_MAX_SEQ, ends=(101, 102))
            assert sum(f > JINA_MAX_SEQ for f in full) >= 1 and max(lens) == JINA_MAX_SEQ
            emb, diff_single = encode_checked(m, texts, normalize)

            # Independent recomputation in f64 from the checkpoint's tensors, each text alone; and
            # mutations that must each move the embedding by more than 1e-3: (a) no ALiBi, (b)
            # the slopes in reverse head order, (c) token type 1, (d) (GLU) gate and up swapped.
            cfg, stored = built["config"], built["stored"]
            slopes = jina_bert.alibi_slopes(heads)
            checks = {}
            for i in [0, texts.index(MP_EXTRA_TEXTS[-1])]:
                err = float(np.abs(pool_f64(jina_hidden_f64(stored, cfg, ids[i]), modes, normalize) - emb[i]).max())
                mutated = [jina_hidden_f64(stored, cfg, ids[i], slopes=[0.0] * heads),
                           jina_hidden_f64(stored, cfg, ids[i], slopes=slopes[::-1]),
                           jina_hidden_f64(stored, cfg, ids[i], token_type=1)]
                if ffn != "original":
                    mutated.append(jina_hidden_f64(stored, cfg, ids[i], swap_glu=True))
                moved = [float(np.abs(pool_f64(x, modes, normalize) - emb[i]).max()) for x in mutated]
                assert err < 1e-5, (folder, i, err)
                if lens[i] > 2:
                    assert min(moved) > 1e-3, (folder, i, moved)
                checks[i] = (err, moved)
            write_json(path / "config.json", cfg)
            entry = position_model_entry("bert", seed, built["vocab_size"], modes, normalize, ids,
                                         [list(range(n)) for n in lens], full, emb)
            models_out[folder] = entry | {
                "feed_forward_type": ffn,
                "num_attention_heads": heads,
                "alibi_slopes": F32Rows([np.array(slopes, dtype=np.float32)]),
            }
            print(f"[jina] {folder}: {heads} heads, {ffn}, prefix {prefix!r}, {built['n_params']:,} params, "
                  f"{fsize(path):,} bytes; {len(texts)} texts, token counts {min(lens)}..{max(lens)}, truncated "
                  f"{sum(f > JINA_MAX_SEQ for f in full)}; max |batched - one-at-a-time| = {diff_single:.3g}; "
                  f"f64 checks {checks}")
    finally:
        jina_bert.unregister()
    write_models_reference(FIXTURES / "tiny_jina_reference.json", JINA_MAX_SEQ, texts, models_out, JINA_HIDDEN)
    return {"texts": texts}


# --------------------------------------------------------------------------------------------
# Tiny random MPNet (the architecture of all-mpnet-base-v2)
# --------------------------------------------------------------------------------------------

MPNET_FOLDER = "tiny-mpnet"
MP_SEED = 20
MP_HIDDEN = 48
MP_MAX_SEQ = 128
MP_MAX_POS = 130  # MPNet's absolute positions start at pad_token_id + 1 = 2 (as RoBERTa's): 128 usable
MP_PAD = 1
MP_BUCKETS = 32  # relative_attention_num_buckets
MP_MAX_DISTANCE = 128  # relative_position_bucket's default, which MPNetEncoder uses
MP_REL_BIAS_STD = 1.0  # large, so that a wrong bucket visibly changes the embeddings
MP_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in all-mpnet-base-v2's vocab
MP_REL_RANGE = 600  # relative_buckets covers memory - context positions -600..600

# Texts that only the MPNet fixture encodes, after roberta_texts().
MP_EXTRA_TEXTS = [
    boundary_text(126),  # exactly 128 tokens
    boundary_text(127),  # 129 tokens, truncated to 128: relative distances up to 127
    # About 60 tokens.
    "Relative position buckets let the model tell near words from far ones: distances below "
    "eight each get a bucket of their own, and longer ones share buckets that grow wider and wider.",
]


def mpnet_texts() -> list[str]:
    """The texts of tiny_roberta_reference.json, then " a" x 126 (exactly 128 tokens), x 127
    (truncated to 128) and a text of about 60 tokens."""
    texts = roberta_texts() + MP_EXTRA_TEXTS
    assert len(texts) == len(set(texts)), "duplicate texts"
    return texts


def mpnet_vocab(minilm_dir: Path | None) -> list[str]:
    """all-mpnet-base-v2's layout on tiny-bert's reduced WordPiece vocab: <s>, <pad>, </s>, <unk>
    (ids 0..3), then tiny_vocab ([PAD]=4, [UNK]=104, [CLS]=105, [SEP]=106, [MASK]=107, ...), then
    <mask> last (2,606 ids). As in all-mpnet-base-v2 the WordPiece unk token is "[UNK]" (104), and
    "<unk>" (3) is a plain vocab entry that no text maps to. tiny_vocab comes from MiniLM's
    vocab.txt when --minilm-dir is given, else from the committed tiny-bert/vocab.txt (its output)."""
    committed = FIXTURES / "tiny-bert" / "vocab.txt"
    if minilm_dir is not None:
        base = tiny_vocab(minilm_dir / "vocab.txt")
        if committed.is_file():
            assert committed.read_text(encoding="utf-8").split("\n")[:-1] == base, committed
    else:
        base = committed.read_text(encoding="utf-8").split("\n")
        assert base.pop() == "" and len(base) == 2601 and base[100] == "[UNK]", committed
    vocab = MP_SPECIALS + base + ["<mask>"]
    assert len(vocab) == len(set(vocab)) and vocab[104] == "[UNK]"
    return vocab


def build_tiny_mpnet(folder: Path, vocab: list[str]) -> dict:
    fresh_folder(folder)
    # transformers 5: MPNetTokenizerFast is MPNetTokenizer (tokenizers backend): BertNormalizer
    # (lowercase, CJK split, accents stripped as lowercase implies), BertPreTokenizer, WordPiece
    # with unk "[UNK]", RobertaProcessing <s> ... </s>; "<mask>" is lstrip, as in all-mpnet-base-v2.
    tokenizer = MPNetTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True,
                                   model_max_length=MP_MAX_POS - 2)
    assert len(tokenizer) == len(vocab)
    config = MPNetConfig(
        vocab_size=len(vocab),
        hidden_size=MP_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=80,
        hidden_act="gelu",
        max_position_embeddings=MP_MAX_POS,
        layer_norm_eps=1e-5,
        relative_attention_num_buckets=MP_BUCKETS,
        pad_token_id=MP_PAD,
        bos_token_id=0,
        eos_token_id=2,
        architectures=["MPNetModel"],
    )
    assert config.model_type == "mpnet"
    specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
    assert tokenizer.convert_tokens_to_ids(specials) == [0, 1, 2, 104, len(vocab) - 1]
    # Re-randomised as build_tiny_roberta's, and the relative attention bias table (32 buckets x 4
    # heads, shared by both layers) with a large spread.
    model = random_model(MPNetModel, config, MP_SEED, std={"encoder.relative_attention_bias.weight": MP_REL_BIAS_STD})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state["encoder.relative_attention_bias.weight"].shape == (MP_BUCKETS, 4)
    # As tiny-bert (and all-mpnet-base-v2): the WordPiece vocab also as vocab.txt, one id a line.
    save_st_folder(folder, model, tokenizer, roberta_special_tokens("[UNK]"), MP_MAX_SEQ,
                   pooling_config(MP_HIDDEN, ("mean",), full_legacy=True), normalize=True, vocab=vocab)
    names = check_st_folder(folder, MPNetModel, state)
    tj = read_json(folder / "tokenizer.json")
    added = added_token_ids(tj)
    assert added == {"<s>": 0, "<pad>": 1, "</s>": 2, "[UNK]": 104, "<mask>": len(vocab) - 1}, added
    assert [a["lstrip"] for a in tj["added_tokens"]] == [False] * 4 + [True]
    assert all(a["special"] and not a["normalized"] for a in tj["added_tokens"])
    assert tj["normalizer"] == {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                                "strip_accents": None, "lowercase": True}, tj["normalizer"]
    assert tj["pre_tokenizer"] == {"type": "BertPreTokenizer"}, tj["pre_tokenizer"]
    assert tj["model"]["type"] == "WordPiece" and tj["model"]["unk_token"] == "[UNK]"
    assert tj["model"]["continuing_subword_prefix"] == "##" and tj["model"]["max_input_chars_per_word"] == 100
    assert tj["model"]["vocab"] == {t: i for i, t in enumerate(vocab)}
    assert tj["post_processor"]["type"] == "RobertaProcessing"
    assert tj["post_processor"]["cls"] == ["<s>", 0] and tj["post_processor"]["sep"] == ["</s>", 2]
    assert tj["truncation"] is None and tj["padding"] is None
    return {"state": state, "n_params": sum(v.numel() for v in state.values()), "weight_names": names,
            "tokenizer_json": {k: tj[k] for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
            | {"model": {k: v for k, v in tj["model"].items() if k != "vocab"}, "added_tokens": added}}


def mpnet_relative_buckets() -> dict:
    """transformers' own MPNetEncoder.relative_position_bucket (torch, CPU; it takes the log in
    float32) for every relative position from -600 to 600, num_buckets 32, max_distance 128.

    Direction: relative_position = memory_position - context_position, i.e. KEY index minus
    QUERY index (MPNetEncoder.compute_position_bias: context = arange(qlen)[:, None], memory =
    arange(klen)[None, :], with plain 0-based sequence indices, not the pad-aware absolute
    position ids). The function negates it (n = query - key); keys AFTER the query (relative
    position > 0) get buckets 17..31, keys at or before it 0..15 (bucket 16 is never used); from
    distance 91 on, both directions saturate (15 and 31). The score of query i and key j
    gets relative_attention_bias.weight[bucket(j - i), head], the same table in every layer.
    """
    rel = torch.arange(-MP_REL_RANGE, MP_REL_RANGE + 1, dtype=torch.long)  # memory - context
    buckets = MPNetEncoder.relative_position_bucket(rel, num_buckets=MP_BUCKETS, max_distance=MP_MAX_DISTANCE)
    assert buckets.dtype == torch.long and buckets.shape == rel.shape
    b = buckets.tolist()
    r = rel.tolist()
    # Bucket 16 (= num_buckets / 2) is never used: relative position 0 takes bucket 0.
    assert set(b) == set(range(MP_BUCKETS)) - {MP_BUCKETS // 2}, sorted(set(b))
    assert b[r.index(0)] == 0
    assert all(0 <= x < MP_BUCKETS // 2 for x, d in zip(b, r) if d <= 0)
    assert all(MP_BUCKETS // 2 <= x < MP_BUCKETS for x, d in zip(b, r) if d > 0)
    # For information only: where an f64 evaluation of the same formula would disagree.
    half = MP_BUCKETS // 2
    exact = half // 2
    f64 = []
    for d in r:
        n = -d
        v = half if n < 0 else 0
        n = abs(n)
        v += n if n < exact else min(half - 1, exact + int(math.log(n / exact) / math.log(MP_MAX_DISTANCE / exact)
                                                          * (half - exact)))
        f64.append(v)
    f64_diff = [d for d, x, y in zip(r, b, f64) if x != y]
    return {"relative_positions": r, "buckets": b, "f64_diff": f64_diff}


def make_mpnet(minilm_dir: Path | None = None) -> dict:
    vocab = mpnet_vocab(minilm_dir)
    texts = mpnet_texts()
    path = FIXTURES / MPNET_FOLDER
    built = build_tiny_mpnet(path, vocab)

    m = load_st_folder(path, MP_MAX_SEQ, ["Transformer", "Pooling", "Normalize"], "mean", "mpnet", built["state"])
    hf = m[0].auto_model
    assert type(hf).__name__ == "MPNetModel"
    feats = m.preprocess(texts[:2])
    st_keys = sorted(feats)
    assert "token_type_ids" not in feats, st_keys  # MPNetTokenizer returns none
    # What ST's Transformer actually hands to MPNetModel.forward.
    calls = st_forward_kwargs(m, texts[:2])
    assert all("token_type_ids" not in k and "position_ids" not in k for k in calls), calls
    forward_kwargs = calls[0]

    ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, MP_MAX_SEQ, ends=(0, 2), pad_id=MP_PAD)
    i126, i127, i60 = (texts.index(t) for t in MP_EXTRA_TEXTS)
    assert full[i126] == MP_MAX_SEQ and lens[i126] == MP_MAX_SEQ  # " a" x 126: exactly 128
    assert full[i127] == MP_MAX_SEQ + 1 and lens[i127] == MP_MAX_SEQ  # x 127: cut
    assert ids[i127][-2] == vocab.index("a")
    assert 55 <= lens[i60] <= 65, lens[i60]
    assert sum(f > MP_MAX_SEQ for f in full) >= 3
    pad_text = texts.index(RB_EDGE_TEXTS[0])
    long_pad = len(roberta_texts()) - 1  # "<pad> " + LONG_BREAD, truncated
    assert ids[pad_text].count(MP_PAD) == 1 and ids[pad_text].count(0) == 2
    assert ids[long_pad][1] == MP_PAD and lens[long_pad] == MP_MAX_SEQ
    assert texts.index("[CLS] [SEP] [MASK] [UNK]") == 12 and ids[12][-2] == 104  # literal [UNK]: special

    positions = []
    for r in ids:
        pos = mpnet_create_position_ids(torch.tensor([r]), MP_PAD)[0].tolist()
        assert pos == roberta_position_ids(r, MP_PAD)
        positions.append(pos)
    assert max(max(p) for p in positions) == MP_MAX_POS - 1  # 128 tokens, no <pad>: row 129

    emb, diff_single = encode_checked(m, texts, normalized=True)

    rb = mpnet_relative_buckets()
    # The model's own bias for a 128-token sequence is the table indexed by these buckets.
    with torch.inference_mode():
        x = torch.zeros(1, MP_MAX_SEQ, MP_HIDDEN)
        bias = hf.encoder.compute_position_bias(x)[0]  # [heads, query, key]
        q = torch.arange(MP_MAX_SEQ)
        table = torch.tensor(rb["buckets"])[(q[None, :] - q[:, None]) + MP_REL_RANGE]  # [query, key]
        assert torch.equal(bias, hf.encoder.relative_attention_bias.weight[table].permute(2, 0, 1))

    # Independent recomputation: the folder loaded afresh as a plain MPNetModel, each text alone,
    # attention mask all ones, mean pooled and L2-normalised here; and the same model with the
    # relative attention bias zeroed, which must give clearly different embeddings. Two likely
    # mistakes must show too (informative, > 1e-3): the bias with query and key swapped (the
    # direction of relative_position reversed), and relative positions taken from the pad-aware
    # absolute position ids instead of the plain sequence indices (only texts with a <pad>).
    plain = MPNetModel.from_pretrained(str(path)).eval()
    no_bias = MPNetModel.from_pretrained(str(path)).eval()
    with torch.no_grad():
        no_bias.encoder.relative_attention_bias.weight.zero_()
    variant = MPNetModel.from_pretrained(str(path)).eval()
    variant_kind = {}

    def variant_bias(x, position_ids=None, num_buckets=MP_BUCKETS):
        if variant_kind["kind"] == "swapped":
            return MPNetEncoder.compute_position_bias(variant.encoder, x).transpose(-1, -2)
        # (compute_position_bias's own position_ids branch fails on its permute, hence by hand.)
        pos = torch.tensor(variant_kind["positions"])
        bucket = MPNetEncoder.relative_position_bucket(pos[None, :] - pos[:, None], num_buckets=num_buckets)
        return variant.encoder.relative_attention_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    variant.encoder.compute_position_bias = variant_bias
    def err_of(model, i: int) -> float:
        """max |text i's hidden states under ``model``, mean pooled and L2-normalised - ST's embedding|"""
        return float(np.abs(pool_f64(hidden_states(model, ids[i]), ("mean",), True) - emb[i]).max())

    checks = {}
    with torch.inference_mode():
        for i in [pad_text, i60, long_pad]:
            explicit = hidden_states(plain, ids[i], position_ids=torch.tensor([positions[i]]))
            assert torch.equal(hidden_states(plain, ids[i]), explicit)
            err = err_of(plain, i)
            err_zero = err_of(no_bias, i)
            assert err < 1e-5, (i, err)
            assert err_zero > 1e-2, (i, err_zero)
            variant_kind.update(kind="swapped")
            err_swapped = err_of(variant, i)
            assert err_swapped > 1e-3, (i, err_swapped)
            variant_kind.update(kind="pad-aware", positions=positions[i])
            err_pad_aware = err_of(variant, i)
            assert (err_pad_aware > 1e-3) == (MP_PAD in ids[i]), (i, err_pad_aware)
            checks[i] = (lens[i], err, err_zero, err_swapped, err_pad_aware)

    out_path = FIXTURES / "tiny_mpnet_reference.json"
    models = {MPNET_FOLDER: position_model_entry("mpnet", MP_SEED, len(vocab), ("mean",), True, ids, positions,
                                                 full, emb)}
    write_models_reference(
        out_path, MP_MAX_SEQ, texts, models, MP_HIDDEN,
        # transformers' MPNetEncoder.relative_position_bucket itself (see mpnet_relative_buckets):
        # relative_positions[k] = memory_position - context_position = key index - query index
        # (0-based sequence indices), buckets[k] its bucket.
        relative_buckets={
            "definition": "relative_position = memory_position - context_position = key index - query index",
            "num_buckets": MP_BUCKETS,
            "max_distance": MP_MAX_DISTANCE,
            "relative_positions": IntList(rb["relative_positions"]),
            "buckets": IntList(rb["buckets"]),
        },
    )
    data = read_json(out_path)
    assert data["relative_buckets"]["buckets"] == rb["buckets"]
    assert data["models"][MPNET_FOLDER]["position_ids"] == positions

    print(f"[mpnet] {MPNET_FOLDER}: vocab {len(vocab)}, {built['n_params']:,} params, {fsize(path):,} bytes; "
          f"attn={hf.config._attn_implementation}; {len(texts)} texts, token counts {min(lens)}..{max(lens)}, "
          f"truncated {sum(f > MP_MAX_SEQ for f in full)}, <pad> tokens {sum(r.count(MP_PAD) for r in ids)}, "
          f"[UNK] tokens {sum(r.count(104) for r in ids)}; ST features {st_keys}; ST forward kwargs "
          f"{forward_kwargs}; max |batched - one-at-a-time| = {diff_single:.3g}; plain-torch check "
          + ", ".join(f"text {i} ({n} tokens): |diff| {e:.3g} (bias zeroed {z:.3g}, query/key swapped "
                      f"{w:.3g}, pad-aware relative positions {a:.3g})" for i, (n, e, z, w, a) in checks.items()))
    print(f"[mpnet] relative buckets -{MP_REL_RANGE}..{MP_REL_RANGE}: f32-log vs f64 formula differ at "
          f"{rb['f64_diff'] or 'no relative position'}")
    return {"texts": texts, "lens": lens, "full": full, "checks": checks, "diff_single": diff_single,
            "weight_names": built["weight_names"], "tokenizer_json": built["tokenizer_json"],
            "forward_kwargs": forward_kwargs, "st_keys": st_keys, "size": fsize(path),
            "params": built["n_params"], "rel": rb}


# --------------------------------------------------------------------------------------------
# Tiny random DistilBERT and sentence-transformers Dense modules
# --------------------------------------------------------------------------------------------

DISTIL_FOLDER = "tiny-distilbert"
DB_SEED = 30
DB_HIDDEN = 48
DB_MAX_SEQ = 40
DB_MAX_POS = 64
DENSE_BIAS_STD = 0.1
ACTIVATIONS = {"tanh": torch.nn.Tanh, "identity": torch.nn.Identity}

# folder: what the transformer is, the pooling, the Dense layer and whether Normalize follows.
# tiny-distilbert mirrors distiluse-base-multilingual-cased (DistilBERT, mean, Dense with tanh);
# tiny-bert-dense mirrors LaBSE (BERT, CLS, Dense with tanh, Normalize); the identity variant
# covers bias=False and the identity activation.
DENSE_MODELS = {
    DISTIL_FOLDER: {"model_type": "distilbert", "pooling": ("mean",), "in": DB_HIDDEN, "out": 24,
                    "bias": True, "activation": "tanh", "normalize": False, "dense_seed": 31},
    "tiny-bert-dense": {"model_type": "bert", "pooling": ("cls",), "in": TINY_HIDDEN, "out": TINY_HIDDEN,
                        "bias": True, "activation": "tanh", "normalize": True, "dense_seed": 32},
    "tiny-bert-dense-identity": {"model_type": "bert", "pooling": ("mean",), "in": TINY_HIDDEN, "out": 20,
                                 "bias": False, "activation": "identity", "normalize": False, "dense_seed": 33},
}


def committed_tiny_bert_vocab() -> list[str]:
    """tiny-bert's WordPiece vocab (tiny_vocab's output) as committed in tiny-bert/vocab.txt."""
    base = (FIXTURES / "tiny-bert" / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert base.pop() == "" and len(base) == 2601 and base[100] == "[UNK]" and base[0] == "[PAD]"
    return base


def fullname_of(cls) -> str:
    """What Dense.get_config_dict writes for an activation class (sentence_transformers.util.fullname)."""
    return f"{cls.__module__}.{cls.__name__}"


def write_dense(folder: Path, spec: dict) -> dict:
    """A seeded ``Dense`` saved by its own ``save`` into ``folder/2_Dense`` (config.json and
    model.safetensors, tensors ``linear.weight`` [out, in] and ``linear.bias`` [out]).

    The weights have std 1/sqrt(in_features) (0.144 for 48, 0.139 for 52), so that the
    pre-activations have about unit spread and only a few percent of the tanh outputs saturate
    (|tanh| > 0.99), where an upstream error would no longer show; std 0.3 would saturate 15 %
    (tiny-distilbert) and 30 % (tiny-bert-dense) of them."""
    gen = torch.Generator().manual_seed(1000 + spec["dense_seed"])
    weight = torch.randn(spec["out"], spec["in"], generator=gen) / math.sqrt(spec["in"])
    bias = DENSE_BIAS_STD * torch.randn(spec["out"], generator=gen) if spec["bias"] else None
    dense = Dense(spec["in"], spec["out"], bias=spec["bias"], activation_function=ACTIVATIONS[spec["activation"]](),
                  init_weight=weight, init_bias=bias)
    out = folder / "2_Dense"
    out.mkdir()
    dense.save(str(out))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert cfg == {"in_features": spec["in"], "out_features": spec["out"], "bias": spec["bias"],
                   "activation_function": fullname_of(ACTIVATIONS[spec["activation"]]),
                   "module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}, cfg
    saved = safetensors.torch.load_file(str(out / "model.safetensors"))
    expected = {"linear.weight": weight} | ({"linear.bias": bias} if spec["bias"] else {})
    assert sorted(saved) == sorted(expected), sorted(saved)
    for k, v in expected.items():
        assert saved[k].dtype == torch.float32 and torch.equal(saved[k], v), k
    return {"config": cfg, "tensors": {k: list(v.shape) for k, v in saved.items()}}


def build_tiny_distilbert(folder: Path, vocab: list[str]) -> dict:
    fresh_folder(folder)
    config = DistilBertConfig(
        vocab_size=len(vocab),
        dim=DB_HIDDEN,
        n_layers=2,
        n_heads=4,
        hidden_dim=80,
        activation="gelu",
        max_position_embeddings=DB_MAX_POS,
        sinusoidal_pos_embds=False,
        pad_token_id=0,
        architectures=["DistilBertModel"],
    )
    assert config.model_type == "distilbert"
    # Re-randomised as build_tiny's: the LayerNorm affine terms (embeddings.LayerNorm, sa_layer_norm,
    # output_layer_norm), the biases and the padding_idx row 0 of the word table.
    model = random_model(DistilBertModel, config, DB_SEED)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert "embeddings.position_ids" not in state  # a non-persistent buffer
    # transformers 5: DistilBertTokenizerFast is DistilBertTokenizer (tokenizers backend), a
    # BertTokenizer without token_type_ids in model_input_names.
    tok = DistilBertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True,
                                  model_max_length=DB_MAX_POS)
    assert tok.model_input_names == ["input_ids", "attention_mask"], tok.model_input_names
    spec = DENSE_MODELS[DISTIL_FOLDER]
    # vocab.txt: the same bytes as tiny-bert's (vocab is read from it).
    save_st_folder(folder, model, tok, BERT_SPECIAL_TOKENS, DB_MAX_SEQ,
                   pooling_config(DB_HIDDEN, spec["pooling"], full_legacy=True), normalize=spec["normalize"],
                   dense=True, vocab=vocab)
    assert (folder / "vocab.txt").read_bytes() == (FIXTURES / "tiny-bert" / "vocab.txt").read_bytes()
    dense = write_dense(folder, spec)
    names = check_st_folder(folder, DistilBertModel, state)
    # The same WordPiece pipeline as tiny-bert's tokenizer.json: BertNormalizer (lowercase),
    # BertPreTokenizer, WordPiece, [CLS] $A [SEP].
    tj = read_json(folder / "tokenizer.json")
    tj_bert = read_json(FIXTURES / "tiny-bert" / "tokenizer.json")
    assert added_token_ids(tj) == BERT_SPECIAL_IDS
    assert tj["model"]["vocab"] == {t: i for i, t in enumerate(vocab)}
    assert tj["normalizer"]["type"] == "BertNormalizer" and tj["normalizer"]["lowercase"] is True
    assert tj["post_processor"]["type"] == "TemplateProcessing"
    assert [next(iter(x.values()))["id"] for x in tj["post_processor"]["single"]] == ["[CLS]", "A", "[SEP]"]
    same_as_bert = {k: tj[k] == tj_bert[k] for k in tj}
    tok_cfg = read_json(folder / "tokenizer_config.json")
    return {"state": state, "n_params": sum(v.numel() for v in state.values()), "weight_names": names,
            "config": read_json(folder / "config.json"), "dense": dense,
            "tokenizer_json_same_as_tiny_bert": same_as_bert, "tokenizer_class": tok_cfg.get("tokenizer_class")}


def build_tiny_bert_dense(folder: Path) -> dict:
    """tiny-bert's folder (same weights and tokenizer files) with another module chain."""
    spec = DENSE_MODELS[folder.name]
    src = FIXTURES / "tiny-bert"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("1_Pooling", "modules.json"))
    write_st_files(folder, TINY_MAX_SEQ, pooling_config(TINY_HIDDEN, spec["pooling"], full_legacy=True),
                   normalize=spec["normalize"], dense=True)
    dense = write_dense(folder, spec)
    for fn in ("model.safetensors", "config.json", "sentence_bert_config.json", *TOKENIZER_FILES):
        assert (folder / fn).read_bytes() == (src / fn).read_bytes(), fn
    check_st_folder(folder)
    return {"dense": dense}


def hand_embedding(hidden: torch.Tensor, spec: dict, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Pooling, Dense and Normalize of one unpadded sequence [n, hidden], in f64."""
    y = pool_f64(hidden, spec["pooling"], normalize=False) @ weight.astype(np.float64).T
    if bias is not None:
        y = y + bias.astype(np.float64)
    if spec["activation"] == "tanh":
        y = np.tanh(y)
    if spec["normalize"]:
        y = y / np.linalg.norm(y)
    return y


def make_distilbert_dense() -> dict:
    vocab = committed_tiny_bert_vocab()
    texts = mpnet_texts()
    built = {DISTIL_FOLDER: build_tiny_distilbert(FIXTURES / DISTIL_FOLDER, vocab)}
    for folder in DENSE_MODELS:
        if folder != DISTIL_FOLDER:
            built[folder] = build_tiny_bert_dense(FIXTURES / folder)

    # The modules.json type ST 6.2 itself writes for Dense, and its 2_Dense files: the same bytes.
    with tempfile.TemporaryDirectory(prefix="ember-dense-") as tmp:
        SentenceTransformer(str(FIXTURES / DISTIL_FOLDER), device="cpu").save(tmp)
        st_types = [m["type"] for m in json.loads((Path(tmp) / "modules.json").read_text())]
        for fn in ("config.json", "model.safetensors"):
            assert (Path(tmp) / "2_Dense" / fn).read_bytes() == (FIXTURES / DISTIL_FOLDER / "2_Dense" / fn).read_bytes()
    print(f"[distilbert] SentenceTransformer.save writes the same 2_Dense files; its modules.json types: {st_types}")

    long_text = texts.index(LONG_LIGHTHOUSE)
    check_texts = [texts.index(CORE_TEXTS[3]), N_CORE, long_text]  # short; exactly 40 tokens; truncated
    models_out = {}
    summary = {}
    ids_by_folder = {}
    for folder, spec in DENSE_MODELS.items():
        path = FIXTURES / folder
        modules = ["Transformer", "Pooling", "Dense"] + ["Normalize"] * spec["normalize"]
        assert DB_MAX_SEQ == TINY_MAX_SEQ
        m = load_st_folder(path, DB_MAX_SEQ, modules, spec["pooling"][0], spec["model_type"],
                           built[folder].get("state"))
        d = m[2]
        assert (d.in_features, d.out_features, d.bias) == (spec["in"], spec["out"], spec["bias"])
        assert type(d.activation_function) is ACTIVATIONS[spec["activation"]]
        assert m.get_embedding_dimension() == spec["out"]
        hf = m[0].auto_model
        if folder == DISTIL_FOLDER:
            assert type(hf).__name__ == "DistilBertModel"
        feats = m.preprocess(texts[:2])
        st_keys = sorted(feats)
        forward_kwargs = st_forward_kwargs(m, texts[:2])[0]
        if folder == DISTIL_FOLDER:
            assert "token_type_ids" not in feats and "token_type_ids" not in forward_kwargs, (st_keys, forward_kwargs)

        ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, DB_MAX_SEQ, ends=(101, 102))
        ids_by_folder[folder] = ids
        assert full[N_CORE] == DB_MAX_SEQ and full[N_CORE + 1] == DB_MAX_SEQ + 1 and lens[N_CORE + 1] == DB_MAX_SEQ
        assert full[long_text] > DB_MAX_SEQ and lens[long_text] == DB_MAX_SEQ

        emb, diff_single = encode_checked(m, texts, spec["normalize"])
        assert emb.shape == (len(texts), spec["out"]), emb.shape

        # (ii) The Dense layer changes the output: the same model without it gives another width
        # (or, 52 -> 52, other values).
        pooled = encode(SentenceTransformer(modules=[m[0], m[1]], device="cpu"), texts)
        emb_no_dense = encode(SentenceTransformer(modules=[m[0], m[1], Normalize()], device="cpu"), texts) \
            if spec["normalize"] else pooled
        assert emb_no_dense.shape[1] == spec["in"]
        dense_changes = None
        if spec["in"] == spec["out"]:
            dense_changes = float(np.abs(emb_no_dense - emb).max())
            assert dense_changes > 0.1, dense_changes
        else:
            assert emb.shape[1] != emb_no_dense.shape[1]

        # (i) Independent recomputation: the folder loaded afresh as a plain transformers model, each
        # text alone (attention mask all ones), then pooling, x @ W.T + b, the activation (and L2
        # normalisation) in f64 here, W and b read from 2_Dense/model.safetensors. Leaving out the
        # activation or the bias must give clearly different embeddings.
        model_cls = DistilBertModel if spec["model_type"] == "distilbert" else BertModel
        plain = model_cls.from_pretrained(str(path)).eval()
        w = safetensors.numpy.load_file(str(path / "2_Dense" / "model.safetensors"))
        weight, bias = w["linear.weight"], w.get("linear.bias")
        assert weight.shape == (spec["out"], spec["in"]) and (bias is not None) == spec["bias"]
        checks = {}
        with torch.inference_mode():
            for i in check_texts:
                hidden = hidden_states(plain, ids[i], token_types=spec["model_type"] == "bert")
                err = float(np.abs(hand_embedding(hidden, spec, weight, bias) - emb[i]).max())
                assert err < 1e-5, (folder, i, err)
                variants = {}
                if spec["activation"] == "tanh":
                    variants["no activation"] = hand_embedding(hidden, spec | {"activation": "identity"}, weight, bias)
                if spec["bias"]:
                    variants["no bias"] = hand_embedding(hidden, spec, weight, None)
                if spec["pooling"] == ("cls",):
                    variants["mean pooling"] = hand_embedding(hidden, spec | {"pooling": ("mean",)}, weight, bias)
                errs = {k: float(np.abs(v - emb[i]).max()) for k, v in variants.items()}
                assert all(e > 1e-3 for e in errs.values()), (folder, i, errs)
                checks[i] = (lens[i], err, errs)

        pre = pooled.astype(np.float64) @ weight.astype(np.float64).T + (0.0 if bias is None else bias)
        pre_std = float(pre.std())
        tanh_saturated = float((np.abs(np.tanh(pre)) > 0.99).mean()) if spec["activation"] == "tanh" else None
        models_out[folder] = {
            "model_type": spec["model_type"],
            "modules": modules,
            "pooling_mode": list(spec["pooling"]),
            "dense": {"in_features": spec["in"], "out_features": spec["out"], "bias": spec["bias"],
                      "activation_function": built[folder]["dense"]["config"]["activation_function"],
                      "seed": 1000 + spec["dense_seed"]},
            "normalize": spec["normalize"],
            "input_ids": IntRows(ids),
            "num_tokens_untruncated": full,
            "embeddings": F32Rows(emb),
        }
        if folder == DISTIL_FOLDER:
            models_out[folder] = {"model_type": "distilbert", "seed": DB_SEED, "vocab_size": len(vocab)} | models_out[folder]
        summary[folder] = {"lens": lens, "full": full, "checks": checks, "diff_single": diff_single,
                           "size": fsize(path), "st_keys": st_keys, "forward_kwargs": forward_kwargs,
                           "dense_changes": dense_changes, "tanh_saturated": tanh_saturated, "pre_std": pre_std,
                           "attn": hf.config._attn_implementation}
        print(f"[distilbert] {folder}: {spec['model_type']}, {' -> '.join(modules)}, dim {spec['out']}, "
              f"{fsize(path):,} bytes; attn={hf.config._attn_implementation}; {len(texts)} texts, token counts "
              f"{min(lens)}..{max(lens)}, truncated {sum(f > DB_MAX_SEQ for f in full)}; ST features {st_keys}; "
              f"ST forward kwargs {forward_kwargs}; max |batched - one-at-a-time| = {diff_single:.3g}; "
              + f"Dense pre-activation std {pre_std:.3g}"
              + (f", |tanh| > 0.99: {tanh_saturated:.1%}; " if tanh_saturated is not None else "; ")
              + (f"max |with - without Dense| {dense_changes:.3g}; " if dense_changes is not None else "")
              + "plain-torch check " + ", ".join(
                  f"text {i} ({n} tokens): |diff| {e:.3g} ("
                  + ", ".join(f"{k} {v:.3g}" for k, v in errs.items()) + ")"
                  for i, (n, e, errs) in checks.items()))
    # One WordPiece vocabulary: DistilBERT's tokenizer gives tiny-bert's ids.
    assert ids_by_folder[DISTIL_FOLDER] == ids_by_folder["tiny-bert-dense"] == ids_by_folder["tiny-bert-dense-identity"]

    write_models_reference(FIXTURES / "tiny_distilbert_dense_reference.json", DB_MAX_SEQ, texts, models_out)
    return {"texts": texts, "summary": summary, "built": {k: {kk: vv for kk, vv in v.items() if kk != "state"}
                                                          for k, v in built.items()},
            "st_types": st_types}


# --------------------------------------------------------------------------------------------
# sentence-transformers prompts (config_sentence_transformers.json)
# --------------------------------------------------------------------------------------------

PROMPTS_FOLDER = "tiny-bert-prompts"
PROMPTS = {"query": "query: ", "passage": "passage: ", "empty": ""}
DEFAULT_PROMPT_NAME = "query"
CUSTOM_PROMPT = "custom instruction: "
# (call, prompt_name, prompt): each is model.encode(texts, batch_size=16, convert_to_numpy=True,
# prompt_name=prompt_name, prompt=prompt). prompt_name=None is encode's default, so it does not
# disable default_prompt_name; an explicit prompt="" does (any non-None prompt wins, and an empty one
# prepends nothing), as does a prompt_name whose prompt is "" ("empty").
PROMPT_CASES = [
    ("encode(texts)", None, None),
    ('encode(texts, prompt_name="passage")', "passage", None),
    ('encode(texts, prompt_name="empty")', "empty", None),
    (f'encode(texts, prompt="{CUSTOM_PROMPT}")', None, CUSTOM_PROMPT),
    ('encode(texts, prompt="")', None, ""),
]


EXCLUDE_PROMPT_MODES = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]
# A prompt longer than max_seq_length: tokenized alone and truncated to 40 it is [CLS] + 38 pieces
# + [SEP], so ST counts 39 prompt tokens and every text keeps only its final [SEP] for pooling.
LONG_PROMPT = "represent this sentence for searching relevant passages " * 8
EXCLUDE_PROMPT_CASES = [
    ("encode(texts)", None, None),
    ('encode(texts, prompt_name="passage")', "passage", None),
    (f'encode(texts, prompt="{CUSTOM_PROMPT}")', None, CUSTOM_PROMPT),
    ('encode(texts, prompt="")', None, ""),
    ("encode(texts, prompt=LONG_PROMPT)", None, LONG_PROMPT),
]


def masked_pool_f64(hidden: torch.Tensor, prompt_length: int, modes: list[str]) -> np.ndarray:
    """ST 6.2's Pooling with include_prompt=False on one unpadded sequence [L, H], in f64, written
    from its masked formulas: positions < prompt_length are masked out of every mode; weightedmean
    keeps the remaining tokens' 1-based positions as weights; lasttoken is the last unmasked token.
    Every case here keeps at least one token (the trailing [SEP])."""
    x = hidden.double().numpy()
    n = x.shape[0]
    p = prompt_length
    assert p < n, (p, n)
    kept = x[p:]
    w = np.arange(p + 1, n + 1, dtype=np.float64)[:, None]
    blocks = {
        "cls": kept[0],
        "max": kept.max(0),
        "mean": kept.mean(0),
        "mean_sqrt_len_tokens": kept.sum(0) / np.sqrt(n - p),
        "weightedmean": (w * kept).sum(0) / w.sum(),
        "lasttoken": x[n - 1],
    }
    return np.concatenate([blocks[m] for m in modes])


def make_exclude_prompt() -> dict:
    """tests/fixtures/tiny_exclude_prompt_reference.json: tiny-bert-prompts with its Pooling
    rewritten to all six modes and ``include_prompt: false`` (the folder is made in a temporary
    directory; the Rust test makes the same from the committed tiny-bert-prompts/ and the
    ``pooling_config`` recorded here), through ``encode`` under each of EXCLUDE_PROMPT_CASES."""
    texts = mpnet_texts()
    pooling_cfg = {"embedding_dimension": TINY_HIDDEN, "pooling_mode": EXCLUDE_PROMPT_MODES,
                   "include_prompt": False}
    with tempfile.TemporaryDirectory(prefix="ember-exclude-prompt-") as tmp:
        folder = Path(tmp) / "tiny-bert-exclude-prompt"
        shutil.copytree(FIXTURES / PROMPTS_FOLDER, folder)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg, indent=2), encoding="utf-8")
        m = SentenceTransformer(str(folder), device="cpu")
        assert m[1].include_prompt is False and list(m[1].pooling_mode) == EXCLUDE_PROMPT_MODES, m[1]
        assert m.max_seq_length == TINY_MAX_SEQ
        plain = BertModel.from_pretrained(str(folder)).eval()
        cases = []
        summary = []
        for call, prompt_name, prompt in EXCLUDE_PROMPT_CASES:
            resolved = m._resolve_prompt(prompt, prompt_name)
            feats = m.preprocess(texts[:1], prompt=resolved)
            prompt_length = feats.get("prompt_length")
            if resolved:
                assert isinstance(prompt_length, int) and prompt_length > 0, (call, prompt_length)
            else:
                assert prompt_length is None, call
            emb = encode_prompted(m, texts, prompt_name, prompt)
            single = np.stack([encode_prompted(m, [t], prompt_name, prompt)[0] for t in texts])
            diff_single = float(np.abs(single - emb).max())
            assert diff_single < 1e-5, (call, diff_single)
            ids = unpadded_input_ids(m, texts, prompt=resolved)
            worst = 0.0
            with torch.inference_mode():
                for i, r in enumerate(ids):
                    ref = masked_pool_f64(hidden_states(plain, r, token_types=True), prompt_length or 0,
                                          EXCLUDE_PROMPT_MODES)
                    worst = max(worst, float(np.abs(ref - emb[i]).max()))
            assert worst < 1e-5, (call, worst)
            cases.append({
                "call": call,
                "prompt_name": prompt_name,
                "prompt": prompt,
                "resolved_prompt": resolved,
                "prompt_length": prompt_length,
                "embeddings": F32Rows(emb),
            })
            summary.append((call, prompt_length, min(len(r) for r in ids), max(len(r) for r in ids),
                            diff_single, worst))
    by_call = {c["call"]: c["embeddings"].a for c in cases}
    # Leaving the prompt out changes the rows (the mean block of the default call differs from
    # the no-prompt call's and from the prompts fixture's include_prompt=True mean).
    assert not np.allclose(by_call["encode(texts)"], by_call['encode(texts, prompt="")'], atol=1e-3)
    long_case = cases[-1]
    assert long_case["prompt_length"] == TINY_MAX_SEQ - 1, long_case["prompt_length"]

    # No special tokens (tokenizer_class PreTrainedTokenizerFast takes tokenizer.json as it is,
    # here without a post-processor): "query: " is the whole prompt length, so "" prefixed by it
    # keeps no token of its own; cls then gives the first token, the means and lasttoken zeros.
    nothing_cfg = {"embedding_dimension": TINY_HIDDEN,
                   "pooling_mode": ["cls", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"],
                   "include_prompt": False}
    nothing_texts = ["", "a cat sits", "x"]
    with tempfile.TemporaryDirectory(prefix="ember-exclude-prompt-") as tmp:
        folder = Path(tmp) / "no-special-tokens"
        shutil.copytree(FIXTURES / PROMPTS_FOLDER, folder)
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(nothing_cfg, indent=2), encoding="utf-8")
        apply_edits(folder, {"tokenizer.json": {"post_processor": None},
                             "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}})
        m = SentenceTransformer(str(folder), device="cpu")
        feats = m.preprocess(nothing_texts, prompt="query: ")
        nothing_length = feats["prompt_length"]
        ids = unpadded_input_ids(m, nothing_texts, prompt="query: ")
        assert len(ids[0]) == nothing_length and all(len(r) > nothing_length for r in ids[1:]), ids
        nothing = m.encode(nothing_texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False,
                           prompt="query: ")
        plain = BertModel.from_pretrained(str(folder)).eval()
        with torch.inference_mode():
            first = hidden_states(plain, ids[0], token_types=True)[0].double().numpy()
        h = TINY_HIDDEN
        assert np.abs(nothing[0][:h] - first).max() < 1e-5 and not nothing[0][h:].any(), nothing[0]
    print(f"[exclude-prompt]   no special tokens: prompt_length {nothing_length}, token counts "
          f"{[len(r) for r in ids]}; the all-prompt text: cls = its first token, the rest 0")

    out_path = FIXTURES / "tiny_exclude_prompt_reference.json"
    out = run_info(FOLDER_ENCODE_CALL.removesuffix(")") + ", prompt_name=prompt_name, prompt=prompt)") | {
        "folder": PROMPTS_FOLDER,
        "pooling_config": pooling_cfg,
        "max_seq_length": TINY_MAX_SEQ,
        "texts": StrRows(texts),
        "cases": cases,
        "no_special_tokens": {
            "edits": {"tokenizer.json": {"post_processor": None},
                      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}},
            "pooling_config": nothing_cfg,
            "prompt": "query: ",
            "prompt_length": nothing_length,
            "texts": StrRows(nothing_texts),
            "embeddings": F32Rows(nothing),
        },
    }
    write_json(out_path, out)
    for k, c in enumerate(cases):
        check_f32_roundtrip(out_path, ["cases", k, "embeddings"], c["embeddings"].a)
    for call, pl, lo, hi, d, w in summary:
        print(f"[exclude-prompt]   {call}: prompt_length {pl}, token counts {lo}..{hi}; "
              f"max |batched - one-at-a-time| {d:.3g}; max |ST - masked BertModel pooling| {w:.3g}")
    return {"texts": texts, "cases": [c["call"] for c in cases]}


REMOVE = "$remove"
# tiny-bert's own added tokens ([PAD], [UNK], [CLS], [SEP], [MASK]), kept where a variant adds one.
TINY_BERT_ADDED = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "tiny-bert" / "tokenizer.json")
                             .read_text(encoding="utf-8"))["added_tokens"]
# (name, {file: {dotted key: value or REMOVE}}): edits of a tiny-bert copy, each loaded by
# transformers' AutoTokenizer as sentence-transformers loads it.
TOKENIZER_CLASS_VARIANTS = [
    ("as published", {}),
    ("tokenizer.json cased, config do_lower_case true", {"tokenizer.json": {"normalizer.lowercase": False}}),
    ("config do_lower_case false", {"tokenizer_config.json": {"do_lower_case": False}}),
    ("no do_lower_case in the config, tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False}, "tokenizer_config.json": {"do_lower_case": REMOVE}}),
    ("config strip_accents false", {"tokenizer_config.json": {"strip_accents": False}}),
    ("config cased, strip_accents true", {"tokenizer_config.json": {"do_lower_case": False, "strip_accents": True}}),
    ("config tokenize_chinese_chars false", {"tokenizer_config.json": {"tokenize_chinese_chars": False}}),
    ("tokenizer.json without a post-processor", {"tokenizer.json": {"post_processor": None}}),
    ("tokenizer.json NFKC normaliser", {"tokenizer.json": {"normalizer": {"type": "NFKC"}}}),
    ("tokenizer.json WhitespaceSplit pre-tokeniser", {"tokenizer.json": {"pre_tokenizer": {"type": "WhitespaceSplit"}}}),
    ("tokenizer.json max_input_chars_per_word 8", {"tokenizer.json": {"model.max_input_chars_per_word": 8}}),
    ("no tokenizer_class (config.json model_type bert), tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False}, "tokenizer_config.json": {"tokenizer_class": REMOVE}}),
    ("tokenizer_class BertTokenizerFast, tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False}, "tokenizer_config.json": {"tokenizer_class": "BertTokenizerFast"}}),
    ("tokenizer_class PreTrainedTokenizerFast, tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False},
      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
    ("tokenizer_class PreTrainedTokenizerFast, no post-processor",
     {"tokenizer.json": {"post_processor": None}, "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
    ("no added tokens in tokenizer.json (the config's special tokens are added)", {"tokenizer.json": {"added_tokens": []}}),
    ("tokenizer.json cased with a normalised added token, config lowercasing",
     {"tokenizer.json": {"normalizer.lowercase": False,
                         "added_tokens": [*TINY_BERT_ADDED, {"id": 2601, "content": "Hello World", "single_word": False,
                                                            "lstrip": False, "rstrip": False, "normalized": True,
                                                            "special": False}]}}),
    ("config.json tokenizer_class PreTrainedTokenizerFast, none in tokenizer_config, tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False}, "tokenizer_config.json": {"tokenizer_class": REMOVE},
      "config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
]
# The same for tiny-mpnet (MPNetTokenizer: BertNormalizer from the config, <s> $A </s>).
MPNET_CLASS_VARIANTS = [
    ("mpnet as published", {}),
    ("mpnet tokenizer.json cased, config do_lower_case true", {"tokenizer.json": {"normalizer.lowercase": False}}),
    ("mpnet config do_lower_case false", {"tokenizer_config.json": {"do_lower_case": False}}),
    ("mpnet tokenizer.json without a post-processor", {"tokenizer.json": {"post_processor": None}}),
    ("mpnet no added tokens in tokenizer.json", {"tokenizer.json": {"added_tokens": []}}),
    ("mpnet no tokenizer_class (model_type mpnet), tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False}, "tokenizer_config.json": {"tokenizer_class": REMOVE}}),
    ("mpnet tokenizer_class PreTrainedTokenizerFast, tokenizer.json cased",
     {"tokenizer.json": {"normalizer.lowercase": False},
      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
]
# tokenizer_config.json's added_tokens_decoder (what transformers 4.34+ wrote): when present,
# transformers takes the added tokens from it, not from tokenizer.json. Here [MASK] takes the space
# before it, and a normalised "Hello World" is added.
BERT_DECODER = {str(t["id"]): {k: v for k, v in t.items() if k != "id"} | ({"lstrip": True} if t["content"] == "[MASK]" else {})
                for t in TINY_BERT_ADDED} | {
    "2601": {"content": "Hello World", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False,
             "special": False}}
TOKENIZER_CLASS_VARIANTS += [
    ("config added_tokens_decoder (tokenizer.json's added tokens not read)",
     {"tokenizer_config.json": {"added_tokens_decoder": BERT_DECODER}, "tokenizer.json": {"added_tokens": []}}),
    ("special_tokens_map.json over tokenizer_config.json",
     {"tokenizer_config.json": {"cls_token": "[MASK]"}, "tokenizer.json": {"added_tokens": []}}),
    ("special_tokens_map.json not read beside added_tokens_decoder",
     {"tokenizer_config.json": {"cls_token": "[MASK]", "added_tokens_decoder": BERT_DECODER}}),
    # Extra special tokens, from each place transformers takes them, split a word.
    ("config additional_special_tokens", {"tokenizer_config.json": {"additional_special_tokens": ["world"]}}),
    ("config extra_special_tokens", {"tokenizer_config.json": {"extra_special_tokens": ["world"]}}),
    ("special_tokens_map.json additional_special_tokens",
     {"special_tokens_map.json": {"additional_special_tokens": ["world"]}}),
    ("config model-specific named token", {"tokenizer_config.json": {"world_token": "world"}}),
    ("added_tokens.json", {"added_tokens.json": {"world": 2601}}),
    ("special_tokens_map.json mask_token object, normalized",
     {"tokenizer.json": {"added_tokens": []},
      "special_tokens_map.json": {"mask_token": {"content": "[MASK]", "lstrip": False, "normalized": True,
                                                 "rstrip": False, "single_word": False}}}),
    ("split_special_tokens, [MASK] not special in the decoder",
     {"tokenizer_config.json": {"split_special_tokens": True, "added_tokens_decoder": BERT_DECODER | {
         "103": {"content": "[MASK]", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": False}}}}),
    ("tokenizer_class ElectraTokenizer, no post-processor",
     {"tokenizer.json": {"post_processor": None}, "tokenizer_config.json": {"tokenizer_class": "ElectraTokenizer"}}),
    ("tokenizer_class PreTrainedTokenizerFast, no added tokens in tokenizer.json",
     {"tokenizer.json": {"added_tokens": []}, "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
    ("tokenizer_class PreTrainedTokenizerFast, split_special_tokens",
     {"tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "split_special_tokens": True}}),
    ("tokenizer_class PreTrainedTokenizerFast, config additional_special_tokens",
     {"tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "additional_special_tokens": ["world"]}}),
    # Which values transformers counts as tokens, and the flags it gives them.
    ("config model-specific named token as a plain object (not a token)",
     {"tokenizer_config.json": {"world_token": {"content": "world", "special": True}}}),
    ("config model-specific named token, special_tokens_map.json's other one loses",
     {"tokenizer_config.json": {"world_token": "world"}, "special_tokens_map.json": {"world_token": "here"}}),
    ("special_tokens_map.json extra_special_tokens object",
     {"special_tokens_map.json": {"extra_special_tokens": {"world_token": "world"}}}),
    ("config extra_special_tokens empty, special_tokens_map.json additional_special_tokens",
     {"tokenizer_config.json": {"extra_special_tokens": []},
      "special_tokens_map.json": {"additional_special_tokens": ["world"]}}),
    ("special_tokens_map.json mask_token null", {"special_tokens_map.json": {"mask_token": None}}),
    ("config mask_token AddedToken object without normalized",
     {"tokenizer.json": {"added_tokens": []}, "special_tokens_map.json": {"mask_token": REMOVE},
      "tokenizer_config.json": {"mask_token": {"__type": "AddedToken", "content": "[MASK]"}}}),
    ("tokenizer_class PreTrainedTokenizerFast, Lowercase, decoder [MASK] normalized",
     {"tokenizer.json": {"normalizer": {"type": "Lowercase"}},
      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "added_tokens_decoder": BERT_DECODER | {
          "103": {"content": "[MASK]", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False,
                  "special": True}}}}),
    ("tokenizer_class PreTrainedTokenizerFast, padding's pad_token",
     {"tokenizer.json": {"padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                                     "pad_id": 1193, "pad_type_id": 0, "pad_token": "world"}},
      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": REMOVE},
      "special_tokens_map.json": {"pad_token": REMOVE}}),
    # sentence-transformers passes sentence_bert_config.json's tokenizer_args to AutoTokenizer.
    ("sentence_bert_config tokenizer_args tokenizer_class (AutoTokenizer reads the file's)",
     {"tokenizer.json": {"normalizer.lowercase": False},
      "sentence_bert_config.json": {"tokenizer_args": {"tokenizer_class": "PreTrainedTokenizerFast"}}}),
    ("sentence_bert_config tokenizer_args do_lower_case false",
     {"sentence_bert_config.json": {"tokenizer_args": {"do_lower_case": False}}}),
    ("sentence_bert_config tokenizer_args cls_token, over special_tokens_map.json",
     {"sentence_bert_config.json": {"tokenizer_args": {"cls_token": "[MASK]"}}}),
]
# RobertaTokenizer keeps tokenizer.json's vocabulary, merges and added tokens and builds the rest:
# no normaliser, ByteLevel(add_prefix_space from the config, false by default), BPE without
# dropout or unknown token, RobertaProcessing with the config's <s> and </s>.
ROBERTA_FOLDER = "tiny-roberta"
ROBERTA_PREFIX_SPACE = {"pre_tokenizer.add_prefix_space": True, "post_processor.add_prefix_space": True}
ROBERTA_CLASS_VARIANTS = [
    ("roberta as published", {}),
    ("roberta tokenizer.json add_prefix_space true", {"tokenizer.json": ROBERTA_PREFIX_SPACE}),
    ("roberta config add_prefix_space true", {"tokenizer_config.json": {"add_prefix_space": True}}),
    ("roberta no add_prefix_space in the config, tokenizer.json true",
     {"tokenizer.json": ROBERTA_PREFIX_SPACE, "tokenizer_config.json": {"add_prefix_space": REMOVE}}),
    ("roberta tokenizer.json Lowercase normaliser", {"tokenizer.json": {"normalizer": {"type": "Lowercase"}}}),
    ("roberta tokenizer.json without a post-processor", {"tokenizer.json": {"post_processor": None}}),
    ("roberta config cls_token <unk>", {"tokenizer_config.json": {"cls_token": "<unk>"},
                                        "special_tokens_map.json": {"cls_token": "<unk>"}}),
    ("roberta no tokenizer_class (model_type roberta), tokenizer.json add_prefix_space true",
     {"tokenizer.json": ROBERTA_PREFIX_SPACE, "tokenizer_config.json": {"tokenizer_class": REMOVE}}),
    ("roberta tokenizer_class PreTrainedTokenizerFast, tokenizer.json add_prefix_space true",
     {"tokenizer.json": ROBERTA_PREFIX_SPACE, "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
    ("roberta special_tokens_map.json cls_token <unk> over the config's",
     {"special_tokens_map.json": {"cls_token": "<unk>"}}),
    ("roberta tokenizer_class BartTokenizer, no post-processor",
     {"tokenizer.json": {"post_processor": None}, "tokenizer_config.json": {"tokenizer_class": "BartTokenizer"}}),
    ("roberta sentence_bert_config tokenizer_args add_prefix_space true",
     {"sentence_bert_config.json": {"tokenizer_args": {"add_prefix_space": True}}}),
    # add_bos_token / add_eos_token: keyword arguments of AutoTokenizer (sentence-transformers'
    # tokenizer_args) make TokenizersBackend (the class that takes tokenizer.json as it is)
    # replace the post-processor by [bos] $A [eos]; in tokenizer_config.json, or for a
    # model-specific class, they change nothing.
    ("roberta PreTrainedTokenizerFast, tokenizer_args add_bos_token false",
     {"tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"},
      "sentence_bert_config.json": {"tokenizer_args": {"add_bos_token": False}}}),
    ("roberta PreTrainedTokenizerFast, tokenizer_args add_eos_token true",
     {"tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"},
      "sentence_bert_config.json": {"tokenizer_args": {"add_eos_token": True}}}),
    ("roberta PreTrainedTokenizerFast, no post-processor, tokenizer_args add_bos_token and add_eos_token true",
     {"tokenizer.json": {"post_processor": None},
      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"},
      "sentence_bert_config.json": {"tokenizer_args": {"add_bos_token": True, "add_eos_token": 1}}}),
    ("roberta PreTrainedTokenizerFast, tokenizer_args add_bos_token true, bos_token <unk>",
     {"tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"},
      "sentence_bert_config.json": {"tokenizer_args": {"add_bos_token": True, "bos_token": "<unk>"}}}),
    ("roberta PreTrainedTokenizerFast, no post-processor, config add_eos_token true (no effect)",
     {"tokenizer.json": {"post_processor": None},
      "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "add_eos_token": True}}),
    ("roberta tokenizer_args add_bos_token false (RobertaTokenizer: no effect)",
     {"sentence_bert_config.json": {"tokenizer_args": {"add_bos_token": False}}}),
    ("roberta config added_tokens_decoder, <mask> without lstrip",
     {"tokenizer_config.json": {"added_tokens_decoder": {
         "0": {"content": "<s>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True},
         "2": {"content": "</s>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False, "special": True},
         "1500": {"content": "<mask>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True}}}}),
]
# XLMRobertaTokenizer (and CamembertTokenizer) keep tokenizer.json's vocabulary, its Precompiled
# charsmap and added tokens: Precompiled alone, WhitespaceSplit then Metaspace (prepend_scheme
# always unless the config's add_prefix_space is false), Unigram with unk_id 3 (Camembert: the
# config's unk_token's), <s> $A </s> from the config's bos/eos. tiny-xlmr-spm's tokenizer.json is
# transformers 5's conversion of a SentencePiece model; the "transformers 4" variants rewrite it as
# the files most published multilingual models carry (Replace of space runs by one space, a
# Metaspace with add_prefix_space).
XLMR_FOLDER = "tiny-xlmr-spm"
XLMR_AS_TRANSFORMERS_4 = {
    "normalizer.normalizers.1": {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
    "normalizer.normalizers.2": REMOVE,
    "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True},
}
XLMR_CLASS_VARIANTS = [
    ("xlmr as published", {}),
    ("xlmr tokenizer.json as transformers 4 wrote it", {"tokenizer.json": XLMR_AS_TRANSFORMERS_4}),
    ("xlmr config add_prefix_space false", {"tokenizer_config.json": {"add_prefix_space": False}}),
    ("xlmr tokenizer.json without a normaliser", {"tokenizer.json": {"normalizer": None}}),
    ("xlmr tokenizer.json unk_id 0", {"tokenizer.json": {"model.unk_id": 0}}),
    ("xlmr tokenizer.json without a post-processor", {"tokenizer.json": {"post_processor": None}}),
    ("xlmr config bos_token <pad>", {"tokenizer_config.json": {"bos_token": "<pad>"},
                                     "special_tokens_map.json": {"bos_token": "<pad>"}}),
    ("xlmr no add_prefix_space in the config, tokenizer.json as transformers 4 wrote it",
     {"tokenizer.json": XLMR_AS_TRANSFORMERS_4, "tokenizer_config.json": {"add_prefix_space": REMOVE}}),
    ("xlmr config add_prefix_space null", {"tokenizer_config.json": {"add_prefix_space": None}}),
    ("xlmr config added_tokens_decoder, <mask> without lstrip",
     {"tokenizer_config.json": {"added_tokens_decoder": {
         "0": {"content": "<s>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True},
         "2001": {"content": "<mask>", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True}}}}),
    ("xlmr no tokenizer_class (model_type xlm-roberta), tokenizer.json as transformers 4 wrote it",
     {"tokenizer.json": XLMR_AS_TRANSFORMERS_4, "tokenizer_config.json": {"tokenizer_class": REMOVE}}),
    ("xlmr tokenizer_class PreTrainedTokenizerFast, tokenizer.json as transformers 4 wrote it",
     {"tokenizer.json": XLMR_AS_TRANSFORMERS_4, "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast"}}),
    ("camembert tokenizer_class CamembertTokenizer, tokenizer.json as transformers 4 wrote it",
     {"tokenizer.json": XLMR_AS_TRANSFORMERS_4, "tokenizer_config.json": {"tokenizer_class": "CamembertTokenizer"}}),
    ("camembert model_type camembert, unk_token <pad>, tokenizer.json unk_id 0",
     {"tokenizer.json": {"model.unk_id": 0}, "tokenizer_config.json": {"tokenizer_class": REMOVE, "unk_token": "<pad>"},
      "special_tokens_map.json": {"unk_token": "<pad>"}, "config.json": {"model_type": "camembert"}}),
]
XLMR_NO_CHARSMAP_VARIANTS = [
    ("xlmr without a charsmap, tokenizer.json as transformers 4 wrote it",
     {"tokenizer.json": {"normalizer": {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
                         "pre_tokenizer": XLMR_AS_TRANSFORMERS_4["pre_tokenizer"]}}),
]

# The same through sentence-transformers (SentenceTransformer(folder).tokenize): its max_seq_length,
# tokenizer_args, do_lower_case and truncation, on tiny-bert. (name, edits, texts)
ST_TOKENIZE_TEXTS = ["one two three four five six seven eight nine ten", "Hello World", "hello world here",
                     "word " * 30]
ST_TOKENIZE_VARIANTS = [
    ("st as published", {}),
    ("st max_seq_length 6", {"sentence_bert_config.json": {"max_seq_length": 6}}),
    ("st truncation_side left", {"sentence_bert_config.json": {"max_seq_length": 6},
                                 "tokenizer_config.json": {"truncation_side": "left"}}),
    ("st tokenizer.json truncation from the left",
     {"sentence_bert_config.json": {"max_seq_length": 6},
      "tokenizer.json": {"truncation": {"direction": "Left", "max_length": 512, "strategy": "LongestFirst",
                                        "stride": 0}}}),
    ("st tokenizer_args truncation_side left", {"sentence_bert_config.json": {
        "max_seq_length": 6, "tokenizer_args": {"truncation_side": "left"}}}),
    ("st tokenizer_args model_max_length 8 over max_seq_length 40",
     {"sentence_bert_config.json": {"tokenizer_args": {"model_max_length": 8}}}),
    ("st do_lower_case over a cased tokenizer with a normalised added token",
     {"sentence_bert_config.json": {"do_lower_case": True},
      "tokenizer_config.json": {"do_lower_case": False},
      "tokenizer.json": {"added_tokens": [*TINY_BERT_ADDED, {"id": 2601, "content": "Hello World", "single_word": False,
                                                             "lstrip": False, "rstrip": False, "normalized": True,
                                                             "special": False}]}}),
    ("st sentence_roberta_config.json (an older name), max_seq_length 6",
     {"sentence_bert_config.json": {"$rename": "sentence_roberta_config.json", "max_seq_length": 6}}),
]

TOKENIZER_CLASS_TEXTS = [
    "Hello World", "Héllo Wörld, naïve café!", "ÉCOLE Ångström", "中文字符 and 日本語", "A [MASK] here.",
    "supercalifragilisticexpialidocious words", "tab\tand\u00a0nbsp", "x" * 120, "", "UPPER lower MiXeD 123",
    "e-mail: someone@example.com (see https://x.y/z)", "don't stop-believing...",
    # Whitespace and the RoBERTa family's special tokens, where transformers 4's SentencePiece files
    # and transformers 5's rebuild part ways.
    "  leading and  double  spaces ", " ", "trailing space ", "line\nbreak\r\nand\ttab", "A <mask> here.",
    "end <s> mid </s>", "xworldy here", "A [mask] here.",
]


def apply_edits(folder: Path, edits: dict) -> None:
    for file, changes in edits.items():
        path = folder / file
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if "$rename" in changes:  # the file moves to another name (then the other edits apply)
            path.unlink()
            path = folder / changes["$rename"]
        for dotted, value in changes.items():
            if dotted == "$rename":
                continue
            *parents, last = dotted.split(".")
            node = data
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node[key]
            if isinstance(node, list):  # an index: replace, append at the end, or remove
                if value == REMOVE:
                    node.pop(int(last))
                elif int(last) == len(node):
                    node.append(value)
                else:
                    node[int(last)] = value
            elif value == REMOVE:
                node.pop(last, None)
            else:
                node[last] = value
        path.write_text(json.dumps(data), encoding="utf-8")


def make_tokenizer_classes() -> dict:
    """tests/fixtures/tokenizer_class_reference.json: how transformers 5 (AutoTokenizer, as
    sentence-transformers loads it) tokenizes copies of the tiny fixtures edited as the
    *_CLASS_VARIANTS lists say. A model-specific class (the config's tokenizer_class, or the one
    config.json's model_type maps to) rebuilds normaliser, pre-tokeniser, post-processor and model
    settings from the class and tokenizer_config.json and keeps only tokenizer.json's vocabulary
    (merges, charsmap) and added tokens (the config's added_tokens_decoder instead, when present);
    ``PreTrainedTokenizerFast`` takes tokenizer.json as it is. Per variant: the edits, the class
    AutoTokenizer chose, and each text's ``input_ids`` (special tokens added, no truncation)."""
    from transformers import AutoTokenizer

    variants = []
    all_variants = [("tiny-bert", *v) for v in TOKENIZER_CLASS_VARIANTS] + \
                   [(MPNET_FOLDER, *v) for v in MPNET_CLASS_VARIANTS] + \
                   [(ROBERTA_FOLDER, *v) for v in ROBERTA_CLASS_VARIANTS] + \
                   [(XLMR_FOLDER, *v) for v in XLMR_CLASS_VARIANTS] + \
                   [("tiny-xlm-roberta", *v) for v in XLMR_NO_CHARSMAP_VARIANTS]
    for source, name, edits in all_variants:
        with tempfile.TemporaryDirectory(prefix="ember-tokenizer-class-") as tmp:
            folder = Path(tmp) / source
            shutil.copytree(FIXTURES / source, folder)
            apply_edits(folder, edits)
            # As sentence-transformers loads it: with sentence_bert_config.json's tokenizer_args.
            st_config = read_json(folder / "sentence_bert_config.json")
            tokenizer_args = st_config.get("tokenizer_args") or st_config.get("processor_kwargs") or {}
            tok = AutoTokenizer.from_pretrained(str(folder), **tokenizer_args)
            ids = [tok(t)["input_ids"] for t in TOKENIZER_CLASS_TEXTS]
        variants.append({"name": name, "folder": source, "edits": edits, "class": type(tok).__name__,
                         "all_special_ids": sorted(set(tok.all_special_ids)), "input_ids": IntRows(ids)})
        print(f"[tokenizer-class]   {name}: {type(tok).__name__}; {TOKENIZER_CLASS_TEXTS[1]!r} -> {ids[1]}")
    by_name = {v["name"]: v["input_ids"].rows for v in variants}
    published = by_name["as published"]
    assert by_name["tokenizer.json cased, config do_lower_case true"] == published
    assert by_name["tokenizer.json without a post-processor"] == published
    assert by_name["tokenizer_class PreTrainedTokenizerFast, tokenizer.json cased"] != published
    assert by_name["mpnet tokenizer.json without a post-processor"] == by_name["mpnet as published"]
    assert by_name["roberta tokenizer.json add_prefix_space true"] == by_name["roberta as published"]
    assert by_name["roberta config add_prefix_space true"] != by_name["roberta as published"]
    xlmr = by_name["xlmr as published"]
    assert by_name["xlmr tokenizer.json as transformers 4 wrote it"] == xlmr
    assert by_name["xlmr tokenizer_class PreTrainedTokenizerFast, tokenizer.json as transformers 4 wrote it"] != xlmr
    assert by_name["config added_tokens_decoder (tokenizer.json's added tokens not read)"] != published
    rob = by_name["roberta as published"]
    assert by_name["roberta PreTrainedTokenizerFast, tokenizer_args add_bos_token false"] == [r[1:-1] for r in rob]
    assert by_name["roberta PreTrainedTokenizerFast, tokenizer_args add_eos_token true"] == [r[1:] for r in rob]
    assert by_name["roberta PreTrainedTokenizerFast, no post-processor, tokenizer_args add_bos_token and "
                   "add_eos_token true"] == rob
    assert by_name["roberta tokenizer_args add_bos_token false (RobertaTokenizer: no effect)"] == rob
    st_variants = []
    for name, edits in ST_TOKENIZE_VARIANTS:
        with tempfile.TemporaryDirectory(prefix="ember-st-tokenize-") as tmp:
            folder = Path(tmp) / "tiny-bert"
            shutil.copytree(FIXTURES / "tiny-bert", folder)
            apply_edits(folder, edits)
            m = SentenceTransformer(str(folder), device="cpu")
            features = m.tokenize(ST_TOKENIZE_TEXTS)
            ids = [[int(i) for i, keep in zip(row, mask) if keep]
                   for row, mask in zip(features["input_ids"].tolist(), features["attention_mask"].tolist())]
        st_variants.append({"name": name, "edits": edits, "max_seq_length": m.max_seq_length,
                            "input_ids": IntRows(ids)})
        print(f"[tokenizer-class]   {name}: max_seq_length {m.max_seq_length}; {ST_TOKENIZE_TEXTS[0]!r} -> {ids[0]}")
    st_ids = {v["name"]: v["input_ids"].rows for v in st_variants}
    assert st_ids["st truncation_side left"] != st_ids["st max_seq_length 6"]
    assert st_ids["st sentence_roberta_config.json (an older name), max_seq_length 6"] == st_ids["st max_seq_length 6"]
    out_path = FIXTURES / "tokenizer_class_reference.json"
    out = run_info("AutoTokenizer.from_pretrained(folder, **tokenizer_args)(text)['input_ids']; "
                   "SentenceTransformer(folder).tokenize(texts)") | {
        "remove_marker": REMOVE,
        "texts": StrRows(TOKENIZER_CLASS_TEXTS),
        "variants": variants,
        "st_texts": StrRows(ST_TOKENIZE_TEXTS),
        "st_variants": st_variants,
    }
    write_json(out_path, out)
    return {"variants": len(variants)}


QUANTIZE_FOLDER = "tiny-bert"
QUANTIZE_PRECISIONS = ["int8", "uint8", "binary", "ubinary"]


def make_quantize() -> dict:
    """tests/fixtures/tiny_quantize_reference.json: tiny-bert (mean pooling, 52 values, no
    Normalize) through ``encode(texts, batch_size=16, precision=p)`` for each of
    QUANTIZE_PRECISIONS on the texts of tiny_mpnet_reference.json, with the float32 rows of the
    same call and the ranges ``[min, max]`` per dimension that int8/uint8 computed from them.
    Checked here: each quantized result is ``quantize_embeddings(float rows, p)`` exactly."""
    from sentence_transformers.util import quantize_embeddings

    texts = mpnet_texts()
    m = SentenceTransformer(str(FIXTURES / QUANTIZE_FOLDER), device="cpu")
    floats = m.encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    assert floats.dtype == np.float32
    ranges = np.vstack((floats.min(0), floats.max(0)))
    cases = []
    for precision in QUANTIZE_PRECISIONS:
        q = m.encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False, precision=precision)
        again = quantize_embeddings(floats, precision=precision)
        assert q.dtype == again.dtype and np.array_equal(q, again), precision
        if precision.endswith("int8"):
            assert np.array_equal(q, quantize_embeddings(floats, precision=precision, ranges=ranges)), precision
        expected_dtype = np.int8 if precision in ("int8", "binary") else np.uint8
        width = floats.shape[1] if precision.endswith("int8") else (floats.shape[1] + 7) // 8
        assert q.dtype == expected_dtype and q.shape == (len(texts), width), (precision, q.dtype, q.shape)
        cases.append({"precision": precision, "dtype": str(q.dtype), "values": IntRows(q.tolist())})
        print(f"[quantize]   {precision}: {q.dtype} {q.shape}, values {int(q.min())}..{int(q.max())}")
    out_path = FIXTURES / "tiny_quantize_reference.json"
    out = run_info("SentenceTransformer(folder, device='cpu').encode(texts, batch_size=16, "
                   "convert_to_numpy=True, precision=precision)") | {
        "folder": QUANTIZE_FOLDER,
        "texts": StrRows(texts),
        "embeddings": F32Rows(floats),
        "ranges": F32Rows(ranges),
        "cases": cases,
    }
    write_json(out_path, out)
    check_f32_roundtrip(out_path, ["embeddings"], floats)
    check_f32_roundtrip(out_path, ["ranges"], ranges)
    return {"texts": len(texts), "precisions": QUANTIZE_PRECISIONS}


def st_config_json(config: dict) -> str:
    """config_sentence_transformers.json as ST's save writes it: ``json.dump(config, f, indent=2,
    sort_keys=True)`` (base/model.py), ASCII-escaped, no trailing newline."""
    return json.dumps(config, indent=2, sort_keys=True)


def write_prompts_config(folder: Path) -> dict:
    """``folder/config_sentence_transformers.json`` with PROMPTS and DEFAULT_PROMPT_NAME, in exactly
    the serialisation and keys of ST's own save (model_type, __version__, prompts,
    default_prompt_name, similarity_fn_name), checked against a real ``SentenceTransformer.save``.
    The one difference: ST's save also lists ``"document": ""``, the placeholder its
    ``_default_prompts`` ({"query": None, "document": None}) leaves in every model's ``prompts``; it
    is left out here, so the file holds only the three prompts asked for (loading adds the
    placeholder back, which the caller checks)."""
    m = SentenceTransformer(str(folder), device="cpu", prompts=PROMPTS, default_prompt_name=DEFAULT_PROMPT_NAME)
    with tempfile.TemporaryDirectory(prefix="ember-prompts-") as tmp:
        m.save(tmp)
        st_text = (Path(tmp) / "config_sentence_transformers.json").read_text(encoding="utf-8")
    st_cfg = json.loads(st_text)
    assert st_text == st_config_json(st_cfg)
    assert sorted(st_cfg) == ["__version__", "default_prompt_name", "model_type", "prompts", "similarity_fn_name"]
    assert st_cfg["prompts"] == {"document": ""} | PROMPTS, st_cfg["prompts"]
    assert st_cfg["default_prompt_name"] == DEFAULT_PROMPT_NAME and st_cfg["model_type"] == "SentenceTransformer"
    assert st_cfg["similarity_fn_name"] == "cosine"
    assert st_cfg["__version__"] == {"sentence_transformers": sentence_transformers.__version__,
                                     "transformers": transformers.__version__, "pytorch": torch.__version__}
    cfg = st_cfg | {"prompts": dict(PROMPTS)}
    (folder / "config_sentence_transformers.json").write_text(st_config_json(cfg), encoding="utf-8")
    return {"config": cfg, "st_save_prompts": st_cfg["prompts"]}


def encode_prompted(model: SentenceTransformer, texts: list[str], prompt_name: str | None,
                    prompt: str | None) -> np.ndarray:
    e = model.encode(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False,
                     prompt_name=prompt_name, prompt=prompt)
    assert e.dtype == np.float32 and e.shape[0] == len(texts)
    assert np.isfinite(e).all()
    return e


def make_prompts() -> dict:
    """tests/fixtures/tiny-bert-prompts/ (tiny-bert plus config_sentence_transformers.json with
    prompts) and tests/fixtures/tiny_prompts_reference.json: the texts of
    tiny_mpnet_reference.json encoded under each of PROMPT_CASES."""
    texts = mpnet_texts()
    src = FIXTURES / "tiny-bert"
    path = FIXTURES / PROMPTS_FOLDER
    if path.exists():
        shutil.rmtree(path)
    shutil.copytree(src, path)
    written = write_prompts_config(path)
    for q in src.rglob("*"):
        if q.is_file():
            assert (path / q.relative_to(src)).read_bytes() == q.read_bytes(), q
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [p.name for p in src.iterdir()] + ["config_sentence_transformers.json"])

    m = load_st_folder(path, TINY_MAX_SEQ, ["Transformer", "Pooling"], "mean", "bert")
    # What ST holds after loading the file: the file's prompts plus the "document" placeholder.
    assert m.prompts == {"query": "query: ", "document": ""} | PROMPTS, m.prompts
    assert m.default_prompt_name == DEFAULT_PROMPT_NAME and m.similarity_fn_name == "cosine"
    assert m[1].include_prompt is True  # mean pooling over the prompt tokens too
    try:
        m.encode(texts[:1], prompt_name="no-such-prompt")
        raise AssertionError("an unknown prompt_name must raise")
    except ValueError as e:
        unknown_error = str(e)
    assert "no-such-prompt" in unknown_error

    plain_model = load_st_folder(src, TINY_MAX_SEQ, ["Transformer", "Pooling"], "mean", "bert")
    assert plain_model.prompts == {"query": "", "document": ""} and plain_model.default_prompt_name is None
    no_prompt = encode(plain_model, texts)
    no_prompt_ids = unpadded_input_ids(plain_model, texts)
    no_prompt_full = untruncated_counts(src / "tokenizer.json", texts)

    tokenizer_json = path / "tokenizer.json"
    rt = tokenizers.Tokenizer.from_file(str(tokenizer_json))
    plain = BertModel.from_pretrained(str(path)).eval()
    long_text = texts.index(LONG_LIGHTHOUSE)
    cases = []
    summary = []
    for call, prompt_name, prompt in PROMPT_CASES:
        resolved = m._resolve_prompt(prompt, prompt_name)  # what encode() passes to preprocess
        ids, lens, full = checked_input_ids(m, tokenizer_json, texts, TINY_MAX_SEQ, ends=(101, 102), prompt=resolved)
        feats = m.preprocess(texts[:2], prompt=resolved)
        prompt_length = feats.get("prompt_length")
        if resolved:
            # The prompt's own pieces (no [CLS]/[SEP]) come right after [CLS] in every row: ST
            # tokenizes prompt + text as one string, and truncation to max_seq_length (which counts
            # the prompt's tokens) cuts the text's end, never the prompt.
            pieces = rt.encode(resolved, add_special_tokens=False).ids
            assert all(r[1:1 + len(pieces)] == pieces for r in ids), call
            # Transformer._get_prompt_length: the prompt tokenized alone, minus its trailing [SEP].
            assert prompt_length == len(pieces) + 1, (call, prompt_length, pieces)
        else:
            assert prompt_length is None and ids == no_prompt_ids, call
        emb = encode_prompted(m, texts, prompt_name, prompt)
        single = np.stack([encode_prompted(m, [t], prompt_name, prompt)[0] for t in texts])
        diff_single = float(np.abs(single - emb).max())
        assert diff_single < 1e-5, (call, diff_single)
        # Independent recomputation: the plain BertModel on each row of ids, mean pooled in f64.
        worst = 0.0
        with torch.inference_mode():
            for i, r in enumerate(ids):
                ref = pool_f64(hidden_states(plain, r, token_types=True), ("mean",), False)
                worst = max(worst, float(np.abs(ref - emb[i]).max()))
        assert worst < 1e-5, (call, worst)
        # Texts that only the prompt pushes past max_seq_length (" a" x 38: exactly 40 tokens alone).
        cut_by_prompt = [i for i, f in enumerate(full) if f > TINY_MAX_SEQ >= no_prompt_full[i]]
        if resolved:
            assert texts.index(boundary_text(38)) in cut_by_prompt and lens[long_text] == TINY_MAX_SEQ, call
        else:
            assert not cut_by_prompt and full == no_prompt_full, call
        cases.append({
            "call": call,
            "prompt_name": prompt_name,
            "prompt": prompt,
            "resolved_prompt": resolved,
            "prompt_length": prompt_length,
            "num_tokens_untruncated": full,
            "input_ids": IntRows(ids),
            "embeddings": F32Rows(emb),
        })
        summary.append((call, repr(resolved), prompt_length, min(lens), max(lens),
                        sum(f > TINY_MAX_SEQ for f in full), cut_by_prompt, diff_single, worst))

    by_call = {c["call"]: c["embeddings"].a for c in cases}
    same = lambda a, b: np.array_equal(a.view(np.uint32), b.view(np.uint32))  # noqa: E731
    default_emb = by_call[PROMPT_CASES[0][0]]
    assert same(by_call['encode(texts, prompt_name="empty")'], no_prompt)
    assert same(by_call['encode(texts, prompt="")'], no_prompt)
    assert not np.allclose(default_emb, no_prompt, atol=1e-3)
    # The methods ST 6.2 adds: encode_query uses prompt_name "query" (always a key, "" unless set),
    # encode_document the first of "document" / "passage" / "corpus" in prompts; "document" is always
    # a key (the "" placeholder), so it never reaches "passage".
    query_emb = m.encode_query(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    doc_emb = m.encode_document(texts, batch_size=16, convert_to_numpy=True, show_progress_bar=False)
    explicit_default = encode_prompted(m, texts, DEFAULT_PROMPT_NAME, None)
    method_checks = {
        "encode_query(texts) == encode(texts)": same(query_emb, default_emb),
        'encode_document(texts) == encode(texts, prompt="")': same(doc_emb, no_prompt),
        'encode_document(texts) == encode(texts, prompt_name="passage")':
            same(doc_emb, by_call['encode(texts, prompt_name="passage")']),
        'encode(texts, prompt_name="query") == encode(texts)': same(explicit_default, default_emb),
        'encode(texts, prompt="") == tiny-bert (no config_sentence_transformers.json) encode(texts)':
            same(by_call['encode(texts, prompt="")'], no_prompt),
        'encode(texts, prompt_name="no-such-prompt") raises ValueError': unknown_error,
    }
    assert method_checks["encode_query(texts) == encode(texts)"]
    assert method_checks['encode_document(texts) == encode(texts, prompt="")']
    assert not method_checks['encode_document(texts) == encode(texts, prompt_name="passage")']
    assert method_checks['encode(texts, prompt_name="query") == encode(texts)']

    out_path = FIXTURES / "tiny_prompts_reference.json"
    out = run_info(FOLDER_ENCODE_CALL.removesuffix(")") + ", prompt_name=prompt_name, prompt=prompt)") | {
        "folder": PROMPTS_FOLDER,
        "max_seq_length": TINY_MAX_SEQ,
        "hidden_size": TINY_HIDDEN,
        "pooling_mode": ["mean"],
        "include_prompt": True,
        "normalize": False,
        "prompts": dict(PROMPTS),
        "default_prompt_name": DEFAULT_PROMPT_NAME,
        "loaded_prompts": dict(m.prompts),
        "texts": StrRows(texts),
        "cases": cases,
        "method_checks": method_checks,
    }
    write_json(out_path, out)
    for k, c in enumerate(cases):
        check_f32_roundtrip(out_path, ["cases", k, "embeddings"], c["embeddings"].a)
    data = read_json(out_path)
    assert [c["input_ids"] for c in data["cases"]] == [c["input_ids"].rows for c in cases]

    print(f"[prompts] {PROMPTS_FOLDER}: tiny-bert + config_sentence_transformers.json "
          f"{json.dumps(written['config'], sort_keys=True)}; ST's own save lists prompts "
          f"{written['st_save_prompts']}; loaded prompts {m.prompts}; {len(texts)} texts; unknown prompt_name: "
          f"{unknown_error!r}")
    for call, resolved, pl, lo, hi, n_cut, cut_by_prompt, d, w in summary:
        print(f"[prompts]   {call}: prompt {resolved}, prompt_length {pl}, token counts {lo}..{hi}, truncated {n_cut} "
              f"(only because of the prompt: texts {cut_by_prompt}); max |batched - one-at-a-time| {d:.3g}; "
              f"max |ST - plain BertModel mean| {w:.3g}")
    print(f"[prompts]   method checks: {method_checks}")
    return {"texts": texts, "cases": [c["call"] for c in cases]}


# --------------------------------------------------------------------------------------------
# Tiny random ModernBERT (the architecture of nomic-ai/modernbert-embed-base and
# Alibaba-NLP/gte-modernbert-base)
# --------------------------------------------------------------------------------------------

MB_FULL, MB_SLIDING = "full_attention", "sliding_attention"
MODERNBERT = {
    # tiny-modernbert: the published checkpoints' settings and config.json format (transformers
    # 4.48: global_attn_every_n_layers 3 -> full, sliding, sliding, full; global_rope_theta and
    # local_rope_theta), mean pooling then Normalize, no bias terms.
    "tiny-modernbert": {
        "seed": 40, "modes": ("mean",), "normalize": True, "bias": False,
        "layer_types": [MB_FULL, MB_SLIDING, MB_SLIDING, MB_FULL], "local_attention": 16,
        "rope_theta": {MB_FULL: 160_000.0, MB_SLIDING: 10_000.0}, "config_format": "published",
    },
    # tiny-modernbert-bias: norm_bias, attention_bias and mlp_bias, config.json as transformers 5
    # writes it (layer_types, rope_parameters); a layer pattern that no global_attn_every_n_layers
    # gives (layer 0 sliding), a narrower window and other thetas, so that a mix-up shows; CLS pooling.
    "tiny-modernbert-bias": {
        "seed": 41, "modes": ("cls",), "normalize": False, "bias": True,
        "layer_types": [MB_SLIDING, MB_FULL, MB_SLIDING, MB_FULL], "local_attention": 8,
        "rope_theta": {MB_FULL: 80_000.0, MB_SLIDING: 5_000.0}, "config_format": "transformers",
    },
}
MB_HIDDEN = 64
MB_HEADS = 4  # head_dim 16
MB_INTERMEDIATE = 96  # Wi is [2 x 96, 64]: (input, gate) halves
MB_LAYERS = 4
MB_MAX_SEQ = 128
MB_MAX_POS = 512
MB_GLOBAL_EVERY = 3  # tiny-modernbert's published global_attn_every_n_layers
MB_TRAINED_VOCAB = 600  # byte-level BPE: the 256 byte symbols, then 344 merges
# Special added tokens after the last BPE id, as in ModernBERT (50280..50284 there).
MB_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
MB_VOCAB_MULTIPLE = 64  # config vocab_size rounded up past the tokenizer, as ModernBERT's 50368
MB_VOCAB_SIZE = -(-(MB_TRAINED_VOCAB + len(MB_SPECIALS)) // MB_VOCAB_MULTIPLE) * MB_VOCAB_MULTIPLE

# Texts that only the ModernBERT fixture encodes, after roberta_texts() (whose literal <pad> etc.
# are plain text here): MPNet's " a" x 126 (exactly 128 tokens), x 127 (truncated) and a medium
# text, then texts around both sliding windows' edges and literal ModernBERT specials.
MB_EXTRA_TEXTS = MP_EXTRA_TEXTS + [
    boundary_text(3),  # 5 tokens: all within tiny-modernbert-bias's |q - k| <= 4
    boundary_text(4),  # 6 tokens: its first and last token out of each other's window
    boundary_text(7),  # 9 tokens: all within tiny-modernbert's |q - k| <= 8
    boundary_text(8),  # 10 tokens: its first and last token out of each other's window
    # Literal specials are ordinary tokens to the model (attention mask 1, RoPE position = index);
    # [MASK] takes the space before it (lstrip).
    "left [PAD] right [CLS] end [SEP] more [UNK] text",
    "fill [MASK] here and[MASK] there",
    "[PAD] " + LONG_BREAD,  # truncated to 128 with a literal [PAD] first
]


def modernbert_texts() -> list[str]:
    """The texts of tiny_roberta_reference.json, then MB_EXTRA_TEXTS."""
    texts = roberta_texts() + MB_EXTRA_TEXTS
    assert len(texts) == len(set(texts)), "duplicate texts"
    return texts


def train_modernbert_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE laid out as ModernBERT's (OLMo's) tokenizer.json: NFC normalizer, ByteLevel
    pre-tokenizer (no prefix space, GPT-2 regex), a BPE model without unk token trained here as in
    ``train_bpe_tokenizer`` (deterministic; the 256 byte symbols first, then merges, no specials in
    the trained vocab), then [UNK], [CLS], [SEP], [PAD], [MASK] as special added tokens after the
    last BPE id ([MASK] lstrip, as ModernBERT's), TemplateProcessing "[CLS] $A [SEP]" (pair "[CLS]
    $A [SEP] $B [SEP]", type ids all 0) and a ByteLevel decoder. Wrapped as a
    PreTrainedTokenizerFast whose model_input_names are input_ids and attention_mask only."""
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.normalizer = tokenizers.normalizers.NFC()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=MB_TRAINED_VOCAB, min_frequency=2, show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer=trainer)
    assert tok.get_vocab_size() == MB_TRAINED_VOCAB, tok.get_vocab_size()
    tok.add_special_tokens([tokenizers.AddedToken(s, lstrip=s == "[MASK]", rstrip=False, normalized=False,
                                                  special=True) for s in MB_SPECIALS])
    ids = {s: tok.token_to_id(s) for s in MB_SPECIALS}
    assert list(ids.values()) == list(range(MB_TRAINED_VOCAB, MB_TRAINED_VOCAB + len(MB_SPECIALS))), ids
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    tok.decoder = tokenizers.decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MB_MAX_POS,
                                   model_input_names=["input_ids", "attention_mask"],
                                   **BERT_SPECIAL_TOKENS)


def published_modernbert_config(saved: dict, spec: dict) -> dict:
    """config.json in the format of the published ModernBERT checkpoints (written by transformers
    4.48; answerdotai/ModernBERT-base, nomic-ai/modernbert-embed-base, Alibaba-NLP/gte-modernbert-base),
    from what transformers 5 saved: no layer_types or rope_parameters, but global_attn_every_n_layers,
    global_rope_theta and local_rope_theta, and their unused keys (layer_norm_eps,
    position_embedding_type "absolute" although there is no position table, reference_compile, ...)."""
    out = dict(saved)
    for k in ("layer_types", "rope_parameters", "dtype", "tie_word_embeddings", "transformers_version"):
        out.pop(k, None)
    assert spec["layer_types"] == [MB_SLIDING if i % MB_GLOBAL_EVERY else MB_FULL for i in range(MB_LAYERS)]
    out |= {
        "global_attn_every_n_layers": MB_GLOBAL_EVERY,
        "global_rope_theta": spec["rope_theta"][MB_FULL],
        "local_rope_theta": spec["rope_theta"][MB_SLIDING],
        "classifier_pooling": "mean",
        "gradient_checkpointing": False,
        "layer_norm_eps": saved["norm_eps"],
        "position_embedding_type": "absolute",
        "reference_compile": False,
        "repad_logits_with_grad": False,
        "torch_dtype": "float32",
        "transformers_version": "4.48.0",
    }
    return dict(sorted(out.items()))


def published_tokenizer_config(folder: Path) -> dict:
    """tokenizer_config.json as the published checkpoints have it (transformers 4.48):
    PreTrainedTokenizerFast, added_tokens_decoder, clean_up_tokenization_spaces."""
    tj = read_json(folder / "tokenizer.json")
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    return {
        "added_tokens_decoder": {str(a["id"]): {k: a[k] for k in keys} for a in tj["added_tokens"]},
        "clean_up_tokenization_spaces": True,
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MB_MAX_POS,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "[UNK]",
    }


def build_tiny_modernbert(folder: Path, spec: dict, tokenizer) -> dict:
    fresh_folder(folder)
    ids = dict(zip(MB_SPECIALS, tokenizer.convert_tokens_to_ids(MB_SPECIALS)))
    assert list(ids.values()) == list(range(MB_TRAINED_VOCAB, MB_TRAINED_VOCAB + len(MB_SPECIALS)))
    assert len(tokenizer) == MB_TRAINED_VOCAB + len(MB_SPECIALS) < MB_VOCAB_SIZE
    bias = spec["bias"]
    config = ModernBertConfig(
        vocab_size=MB_VOCAB_SIZE,
        hidden_size=MB_HIDDEN,
        intermediate_size=MB_INTERMEDIATE,
        num_hidden_layers=MB_LAYERS,
        num_attention_heads=MB_HEADS,
        hidden_activation="gelu",
        max_position_embeddings=MB_MAX_POS,
        norm_eps=1e-5,
        norm_bias=bias,
        attention_bias=bias,
        mlp_bias=bias,
        layer_types=list(spec["layer_types"]),
        local_attention=spec["local_attention"],
        rope_parameters={t: {"rope_type": "default", "rope_theta": th} for t, th in spec["rope_theta"].items()},
        pad_token_id=ids["[PAD]"],
        cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"],
        bos_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
        classifier_pooling=spec["modes"][0],
        architectures=["ModernBertModel"],
    )
    assert config.model_type == "modernbert" and config.sliding_window == spec["local_attention"] // 2
    # Re-randomised as build_tiny_roberta's: every norm weight (embeddings.norm, attn_norm (none in
    # layer 0), mlp_norm, final_norm) 1 + 0.1 N(0, 1), every bias 0.1 N(0, 1), the rest 0.2 N(0, 1)
    # (the [PAD] row and the rows past the tokenizer's ids too).
    model = random_model(ModernBertModel, config, spec["seed"], norm_suffixes=("norm.weight",))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert "layers.0.attn_norm.weight" not in state and "layers.1.attn_norm.weight" in state
    assert all(k.endswith(".weight") for k in state) != bias
    assert state["layers.0.attn.Wqkv.weight"].shape == (3 * MB_HIDDEN, MB_HIDDEN)
    assert state["layers.0.mlp.Wi.weight"].shape == (2 * MB_INTERMEDIATE, MB_HIDDEN)
    save_st_folder(folder, model, tokenizer, BERT_SPECIAL_TOKENS, MB_MAX_SEQ,
                   pooling_config(MB_HIDDEN, spec["modes"], full_legacy=True), normalize=spec["normalize"])
    saved = read_json(folder / "config.json")
    assert saved["layer_types"] == spec["layer_types"] and "global_rope_theta" not in saved
    assert saved["rope_parameters"] == {t: {"rope_theta": th, "rope_type": "default"}
                                        for t, th in spec["rope_theta"].items()}, saved["rope_parameters"]
    assert "global_attn_every_n_layers" not in saved, saved
    if spec["config_format"] == "published":
        (folder / "config.json").write_text(json.dumps(published_modernbert_config(saved, spec), indent=2) + "\n")
        (folder / "tokenizer_config.json").write_text(json.dumps(published_tokenizer_config(folder), indent=2) + "\n")
    written = read_json(folder / "config.json")
    assert ("layer_types" in written) == ("rope_parameters" in written) == (spec["config_format"] != "published")
    # transformers 5.24 reads either format back to the intended layer types, thetas and window.
    loaded = AutoConfig.from_pretrained(str(folder))
    assert type(loaded) is ModernBertConfig and loaded.layer_types == spec["layer_types"], loaded.layer_types
    assert {t: p["rope_theta"] for t, p in loaded.rope_parameters.items()} == spec["rope_theta"]
    assert all(p["rope_type"] == "default" for p in loaded.rope_parameters.values())
    assert loaded.local_attention == spec["local_attention"] and loaded.sliding_window == spec["local_attention"] // 2
    assert (loaded.pad_token_id, loaded.cls_token_id, loaded.sep_token_id) == (ids["[PAD]"], ids["[CLS]"], ids["[SEP]"])
    check_st_folder(folder, ModernBertModel, state)
    tj = read_json(folder / "tokenizer.json")
    assert added_token_ids(tj) == ids
    assert [a["lstrip"] for a in tj["added_tokens"]] == [False] * 4 + [True]
    assert all(a["special"] and not a["normalized"] for a in tj["added_tokens"])
    assert tj["normalizer"] == {"type": "NFC"}, tj["normalizer"]
    assert tj["pre_tokenizer"] == {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                   "use_regex": True}, tj["pre_tokenizer"]
    assert tj["model"]["type"] == "BPE" and tj["model"]["unk_token"] is None
    assert tj["post_processor"]["type"] == "TemplateProcessing"
    assert tj["post_processor"]["special_tokens"]["[CLS]"]["ids"] == [ids["[CLS]"]]
    assert tj["post_processor"]["special_tokens"]["[SEP]"]["ids"] == [ids["[SEP]"]]
    assert tj["truncation"] is None and tj["padding"] is None
    return {"state": state, "n_params": sum(v.numel() for v in state.values()), "ids": ids,
            "config_keys": sorted(written)}


def window_mask(n: int, window: int, inclusive: bool = True) -> torch.Tensor:
    """[1, 1, n, n] boolean attention mask (True: attend) of a sliding window over n unpadded
    tokens: |q - k| <= window (inclusive) or < window."""
    q = torch.arange(n)
    d = (q[None, :] - q[:, None]).abs()
    return (d <= window if inclusive else d < window)[None, None]


def mb_hidden(model, ids: list[int], masks: dict | None = None, **kwargs) -> torch.Tensor:
    """ModernBertModel's last hidden state [n, hidden] for one unpadded sequence; ``masks``, if
    given, replaces transformers' own per-layer-type masks ({layer type: [1, 1, n, n] bool mask or
    None for no mask}; ModernBertModel.forward takes such a dict as ``attention_mask``)."""
    t = torch.tensor([ids])
    mask = masks if masks is not None else torch.ones_like(t)
    return model(input_ids=t, attention_mask=mask, **kwargs).last_hidden_state[0]


def interleave_rope_weights(model) -> None:
    """Permute the query and key rows of every Wqkv (weight and bias) within each head by
    [0, 2, 4, ..., 14, 1, 3, ..., 15]: transformers' rotate_half RoPE on the permuted rows gives
    the same attention scores as an interleaved (GPT-J style: pairs (2i, 2i + 1) rotated by
    frequency i) RoPE on the original ones, the likely mistake this variant stands for."""
    hd = MB_HIDDEN // MB_HEADS
    perm = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])
    rows = torch.cat([part * MB_HIDDEN + h * hd + perm for part in (0, 1) for h in range(MB_HEADS)]
                     + [torch.arange(2 * MB_HIDDEN, 3 * MB_HIDDEN)])
    with torch.no_grad():
        for layer in model.layers:
            layer.attn.Wqkv.weight.copy_(layer.attn.Wqkv.weight[rows])
            if layer.attn.Wqkv.bias is not None:
                layer.attn.Wqkv.bias.copy_(layer.attn.Wqkv.bias[rows])


def make_modernbert() -> dict:
    """tests/fixtures/tiny-modernbert/, tiny-modernbert-bias/ and tiny_modernbert_reference.json."""
    tokenizer = train_modernbert_tokenizer(tokenizer_corpus())
    texts = modernbert_texts()
    models_out = {}
    summary = {}
    for folder, spec in MODERNBERT.items():
        path = FIXTURES / folder
        built = build_tiny_modernbert(path, spec, tokenizer)
        ids_of = built["ids"]
        modes, normalize = spec["modes"], spec["normalize"]
        window = spec["local_attention"] // 2
        m = load_st_folder(path, MB_MAX_SEQ, ["Transformer", "Pooling"] + ["Normalize"] * normalize, modes[0],
                           "modernbert", built["state"])
        hf = m[0].auto_model
        assert type(hf).__name__ == "ModernBertModel"
        assert hf.config.layer_types == spec["layer_types"]
        feats = m.preprocess(texts[:2])
        st_keys = sorted(feats)
        assert "token_type_ids" not in feats, st_keys  # model_input_names: input_ids, attention_mask
        calls = st_forward_kwargs(m, texts[:2])
        assert all("token_type_ids" not in k and "position_ids" not in k for k in calls), calls
        forward_kwargs = calls[0]
        # The intended thetas reached the model: inv_freq = theta ** -(arange(0, 16, 2) / 16), in f32.
        hd = MB_HIDDEN // MB_HEADS
        for t, theta in spec["rope_theta"].items():
            want = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
            assert torch.equal(getattr(hf.rotary_emb, f"{t}_inv_freq"), want), t

        ids, lens, full = checked_input_ids(m, path / "tokenizer.json", texts, MB_MAX_SEQ,
                                            ends=(ids_of["[CLS]"], ids_of["[SEP]"]), pad_id=ids_of["[PAD]"])
        i126, i127, i_med = (texts.index(t) for t in MP_EXTRA_TEXTS)
        assert full[i126] == MB_MAX_SEQ and lens[i126] == MB_MAX_SEQ  # " a" x 126: exactly 128
        assert full[i127] == MB_MAX_SEQ + 1 and lens[i127] == MB_MAX_SEQ  # x 127: cut
        assert [lens[texts.index(boundary_text(n))] for n in (3, 4, 7, 8)] == [5, 6, 9, 10]
        assert sum(f > MB_MAX_SEQ for f in full) >= 3
        i_specials, i_mask, i_long_pad = (texts.index(t) for t in MB_EXTRA_TEXTS[-3:])
        assert [ids[i_specials].count(ids_of[s]) for s in MB_SPECIALS] == [1, 2, 2, 1, 0]
        assert ids[i_mask].count(ids_of["[MASK]"]) == 2
        mask_prev = [tokenizer.convert_ids_to_tokens(ids[i_mask][j - 1])
                     for j, v in enumerate(ids[i_mask]) if v == ids_of["[MASK]"]]
        assert "Ġ" in tokenizer.get_vocab() and "Ġ" not in mask_prev, mask_prev  # lstrip: the space went with [MASK]
        assert ids[i_long_pad][1] == ids_of["[PAD]"] and lens[i_long_pad] == MB_MAX_SEQ
        i_essay = texts.index(LONG_ESSAY)
        assert lens[i_essay] == MB_MAX_SEQ
        positions = [list(range(n)) for n in lens]  # RoPE positions: plain indices, [PAD] or not

        emb, diff_single = encode_checked(m, texts, normalize)

        # Independent recomputation: the folder loaded afresh as a plain ModernBertModel (sdpa, as
        # ST loads it), each text alone, attention mask all ones, pooled here in f64; the same with
        # transformers' per-layer-type masks replaced by our own |q - k| <= local_attention // 2
        # window (identical); and mutations that must each move the embedding by more than 1e-3:
        # (a) no sliding window (full attention in every layer), (b) the two thetas swapped,
        # (c) no RoPE (position_ids all 0: cos 1, sin 0), (d) the window exclusive
        # (|q - k| < local_attention // 2), (e) the window not halved (|q - k| <= local_attention),
        # (f) interleaved instead of rotate_half RoPE, (g) (bias model) every bias zeroed.
        # For information: eager attention, and cos/sin computed in f64.
        plain = ModernBertModel.from_pretrained(str(path)).eval()
        assert plain.config._attn_implementation == "sdpa", plain.config._attn_implementation
        eager = ModernBertModel.from_pretrained(str(path), attn_implementation="eager").eval()
        swapped = ModernBertModel.from_pretrained(str(path)).eval()
        with torch.no_grad():
            r = swapped.rotary_emb
            f, s = r.full_attention_inv_freq.clone(), r.sliding_attention_inv_freq.clone()
            r.full_attention_inv_freq.copy_(s)
            r.sliding_attention_inv_freq.copy_(f)
        interleaved = ModernBertModel.from_pretrained(str(path)).eval()
        interleave_rope_weights(interleaved)
        no_bias = ModernBertModel.from_pretrained(str(path)).eval()
        with torch.no_grad():
            for name, p in no_bias.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
        rope64 = ModernBertModel.from_pretrained(str(path)).eval()

        def rope64_forward(x, position_ids, layer_type):
            inv = 1.0 / (spec["rope_theta"][layer_type] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
            freqs = position_ids[..., None].double() * inv
            e = torch.cat((freqs, freqs), dim=-1)
            return e.cos().to(x.dtype), e.sin().to(x.dtype)

        rope64.rotary_emb.forward = rope64_forward

        def err(hidden: torch.Tensor, i: int) -> float:
            return float(np.abs(pool_f64(hidden, modes, normalize) - emb[i]).max())

        checks = {}
        with torch.inference_mode():
            for i in [i_med, i_specials, i_long_pad, i127, i_essay]:
                n, r_ids = lens[i], ids[i]
                out = mb_hidden(plain, r_ids)
                assert torch.equal(out, hidden_states(plain, r_ids))
                own = mb_hidden(plain, r_ids, {MB_FULL: None, MB_SLIDING: window_mask(n, window)})
                assert torch.equal(own, out), float((own - out).abs().max())
                c = {"err": err(out, i)}
                assert c["err"] < 1e-5, (folder, i, c["err"])
                c["no_window"] = err(mb_hidden(plain, r_ids, {MB_FULL: None, MB_SLIDING: None}), i)
                c["swapped_theta"] = err(mb_hidden(swapped, r_ids), i)
                c["no_rope"] = err(mb_hidden(plain, r_ids, position_ids=torch.zeros(1, n, dtype=torch.long)), i)
                c["window_exclusive"] = err(mb_hidden(plain, r_ids, {MB_FULL: None,
                                                                     MB_SLIDING: window_mask(n, window, False)}), i)
                c["window_not_halved"] = err(mb_hidden(
                    plain, r_ids, {MB_FULL: None, MB_SLIDING: window_mask(n, spec["local_attention"])}), i)
                c["interleaved_rope"] = err(mb_hidden(interleaved, r_ids), i)
                if spec["bias"]:
                    c["no_bias"] = err(mb_hidden(no_bias, r_ids), i)
                for k, v in c.items():
                    assert k == "err" or v > 1e-3, (folder, i, k, v)
                c["eager_vs_sdpa"] = float((mb_hidden(eager, r_ids) - out).abs().max())
                c["rope_f64"] = err(mb_hidden(rope64, r_ids), i)
                checks[i] = c

        models_out[folder] = position_model_entry("modernbert", spec["seed"], MB_VOCAB_SIZE, modes, normalize, ids,
                                                  positions, full, emb) | {
            "layer_types": spec["layer_types"],
            "sliding_window": window,  # |q - k| <= this on sliding_attention layers
            "rope_theta": spec["rope_theta"],
        }
        summary[folder] = {"lens": lens, "full": full, "checks": checks, "diff_single": diff_single,
                           "size": fsize(path), "params": built["n_params"], "st_keys": st_keys,
                           "forward_kwargs": forward_kwargs, "config_keys": built["config_keys"]}
        print(f"[modernbert] {folder}: config.json {spec['config_format']} format, layer_types "
              f"{[t[0].upper() for t in spec['layer_types']]}, window |q - k| <= {window}, thetas "
              f"{spec['rope_theta'][MB_FULL]:g} / {spec['rope_theta'][MB_SLIDING]:g}, biases {spec['bias']}; "
              f"vocab {len(tokenizer)} (config {MB_VOCAB_SIZE}), {built['n_params']:,} params, "
              f"{fsize(path):,} bytes; {len(texts)} texts, token counts {min(lens)}..{max(lens)}, truncated "
              f"{sum(f > MB_MAX_SEQ for f in full)}; ST features {st_keys}; ST forward kwargs {forward_kwargs}; "
              f"max |batched - one-at-a-time| = {diff_single:.3g}; plain-torch check:")
        for i, c in checks.items():
            print(f"[modernbert]   text {i} ({lens[i]} tokens): |diff| {c['err']:.3g}; mutations "
                  + ", ".join(f"{k} {v:.3g}" for k, v in c.items() if k not in ("err", "eager_vs_sdpa", "rope_f64"))
                  + f"; eager vs sdpa hidden {c['eager_vs_sdpa']:.3g}, f64 cos/sin {c['rope_f64']:.3g}")

    out_path = FIXTURES / "tiny_modernbert_reference.json"
    write_models_reference(out_path, MB_MAX_SEQ, texts, models_out, MB_HIDDEN)
    data = read_json(out_path)
    assert list(data["models"]) == list(MODERNBERT)
    assert data["models"]["tiny-modernbert"]["input_ids"] == data["models"]["tiny-modernbert-bias"]["input_ids"]
    return {"texts": texts, "summary": summary}


# --------------------------------------------------------------------------------------------
# torch.save fixtures (the only part of this script that needs torch.save itself)
# --------------------------------------------------------------------------------------------

TORCHBIN_FOLDER = "tiny-bert-torchbin"
TORCH_SAVE_DIR = "torch-save"


def torch_expected(tensors: dict) -> dict:
    """What torch itself reads back: dtype, shape, stride, storage offset and the values (as
    f32, row-major; floats are exact, as every f16/bf16/f32 value is an f64)."""
    out = {}
    for name, t in tensors.items():
        entry = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                 "stride": list(t.stride()), "storage_offset": t.storage_offset(),
                 "contiguous": t.is_contiguous()}
        if t.is_floating_point():
            entry["values"] = F32List(t.float().reshape(-1).numpy())
        out[name] = entry
    return out


def make_torch_fixtures() -> None:
    """``pytorch_model.bin`` fixtures written by ``torch.save`` (zip format, pickle protocol 2
    unless noted), for Ember's safe reader of that format:

    ``tests/fixtures/tiny-bert-torchbin/``
        tiny-bert's folder with ``model.safetensors`` replaced by ``pytorch_model.bin``: the same
        tensors, bit for bit, saved as ``torch.save(OrderedDict)`` of a state dict with its
        ``_metadata`` attribute, plus the int64 ``embeddings.position_ids`` buffer that older
        transformers versions saved (as published SBERT checkpoints have it).
    ``tests/fixtures/torch-save/``
        ``views.pt`` (f32 tensors sharing one storage: the tensor itself twice, ``w[1:]``, a
        column, a transpose; a scalar, an empty tensor, an int64 buffer), ``half_proto4.pt``
        (f16 and bf16 storages, a transposed f16 view; pickle protocol 4: FRAME, MEMOIZE,
        STACK_GLOBAL), ``wrapped.pt`` (a plain dict ``{"epoch": 3, "state_dict": {...}}``),
        ``legacy.pt`` (the pre-1.6 non-zip format, which Ember refuses; its storage keys are
        object ids, so unlike the zip files it is not byte-identical when rewritten), and
        ``expected.json``: per file and tensor what ``torch.load`` reads back.
    """
    src = FIXTURES / "tiny-bert"
    folder = FIXTURES / TORCHBIN_FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    state = collections.OrderedDict(safetensors.torch.load_file(str(src / "model.safetensors")))
    n_float = len(state)
    state["embeddings.position_ids"] = torch.arange(64).unsqueeze(0)
    state._metadata = collections.OrderedDict({"": {"version": 1}, "embeddings": {"version": 1}})
    torch.save(state, str(folder / "pytorch_model.bin"))
    back = torch.load(str(folder / "pytorch_model.bin"), weights_only=True)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)

    # sentence-transformers reads the .bin folder to the same embeddings, bit for bit.
    texts = ["A cat sits on the mat.", "Lighthouses guided sailors.", "", "naïve café 123"]
    a = encode(SentenceTransformer(str(src), device="cpu"), texts)
    b = encode(SentenceTransformer(str(folder), device="cpu"), texts)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))

    out_dir = FIXTURES / TORCH_SAVE_DIR
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir()
    gen = torch.Generator().manual_seed(7)
    base = torch.randn(3, 4, generator=gen)
    views = collections.OrderedDict()
    views["base"] = base
    views["tied"] = base  # the same tensor object: one pickle memo entry
    views["tail"] = base[1:]  # storage offset 4
    views["column"] = base[:, 2]  # offset 2, stride [4]
    views["transposed"] = base.t()  # not contiguous
    views["scale"] = torch.tensor(3.5)
    views["empty"] = torch.zeros(0, 4)
    views["position_ids"] = torch.arange(8).unsqueeze(0)
    views._metadata = collections.OrderedDict({"": {"version": 1}})
    half = (torch.randn(2, 3, generator=gen) * 4).half()
    halves = {
        "half": half,
        "half_t": half.t(),
        "bf16": torch.randn(5, generator=gen).bfloat16(),
    }
    wrapped = {"epoch": 3, "state_dict": collections.OrderedDict(w=torch.randn(2, 2, generator=gen))}
    files = {"views.pt": (views, 2), "half_proto4.pt": (halves, 4), "wrapped.pt": (wrapped, 2)}
    expected = {}
    for fn, (obj, proto) in files.items():
        torch.save(obj, str(out_dir / fn), pickle_protocol=proto)
        # torch's weights_only unpickler has no FRAME (protocol 4); this file is our own.
        loaded = torch.load(str(out_dir / fn), weights_only=proto == 2)
        tensors = loaded["state_dict"] if "state_dict" in loaded else loaded
        expected[fn] = torch_expected(tensors)
    torch.save(collections.OrderedDict(w=base), str(out_dir / "legacy.pt"),
               _use_new_zipfile_serialization=False)
    write_json(out_dir / "expected.json", {"versions": versions(), "files": expected})
    print(f"[torch-save] {folder.relative_to(REPO)}/pytorch_model.bin ({n_float} float tensors + "
          f"position_ids, {fsize(folder / 'pytorch_model.bin'):,} bytes); "
          + ", ".join(f"{p.name} {fsize(p):,}" for p in sorted(out_dir.iterdir())))


# --------------------------------------------------------------------------------------------
# Seeded BERT-base-shaped model
# --------------------------------------------------------------------------------------------

SEED_SPEC = """Seeded BERT-base weights (no 'bert.' prefix, no pooler). For each tensor `name` and flat row-major index j (0-based), with all integer arithmetic mod 2^64:
fnv1a64(name utf-8 bytes): h = 0xcbf29ce484222325; for each byte b: h ^= b; h = h * 0x100000001b3
mix(z): z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9; z = (z ^ (z >> 27)) * 0x94d049bb133111eb; return z ^ (z >> 31)
u = mix(fnv1a64(name) + (j + 1) * 0x9E3779B97F4A7C15)
f = (u >> 40) / 2^24   (exact, in [0, 1))
value = f32(center + scale * (2*f - 1)), evaluated in f64 in that order, rounded once to f32 (round-to-nearest-even).
(center, scale): name ends 'LayerNorm.weight' -> (1.0, 0.2); ends 'LayerNorm.bias' -> (0.0, 0.2); embeddings.{word,position,token_type}_embeddings.weight -> (0.0, 1.0); other names ending '.bias' -> (0.0, 0.1); all other weights (Linear matrices, PyTorch [out, in]) -> (0.0, 0.06).
Config: vocab 30522, hidden 768, 12 layers, 12 heads, intermediate 3072, max_position_embeddings 512, type_vocab_size 2, layer_norm_eps 1e-12, hidden_act gelu, absolute positions. Tokenizer: bert-base-uncased (all-MiniLM-L6-v2's files). Modules: Transformer + mean Pooling (no Normalize), max_seq_length 75.
weight_checksums: first4 = first 4 values (flat index 0..3); sum_f64 = exactly rounded (math.fsum) sum of all values as f64; sum_abs_f64 likewise of |value|."""

MASK64 = (1 << 64) - 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def fnv1a64(name: str) -> int:
    h = FNV_OFFSET
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * FNV_PRIME) & MASK64
    return h


def center_scale(name: str) -> tuple[float, float]:
    if name.endswith("LayerNorm.weight"):
        return 1.0, 0.2
    if name.endswith("LayerNorm.bias"):
        return 0.0, 0.2
    if name in ("embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight"):
        return 0.0, 1.0
    if name.endswith(".bias"):
        return 0.0, 0.1
    return 0.0, 0.06


def seeded_scalar(name: str, j: int) -> np.float32:
    """Literal, unvectorised transcription of SEED_SPEC (used to check the fast version)."""
    z = (fnv1a64(name) + (j + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    u = z ^ (z >> 31)
    f = (u >> 40) / float(1 << 24)
    c, s = center_scale(name)
    return np.float32(c + s * (2.0 * f - 1.0))


def seeded_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    z = np.arange(1, n + 1, dtype=np.uint64)
    z *= np.uint64(GOLDEN)  # uint64 array arithmetic wraps mod 2^64
    z += np.uint64(fnv1a64(name))
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX2)
    z ^= z >> np.uint64(31)
    z >>= np.uint64(40)
    f = z.astype(np.float64)
    del z
    f /= float(1 << 24)
    c, s = center_scale(name)
    v = (c + s * (2.0 * f - 1.0)).astype(np.float32)
    return v.reshape(shape)


SB_HIDDEN, SB_LAYERS, SB_INTER, SB_VOCAB, SB_POS, SB_TYPES = 768, 12, 3072, 30522, 512, 2
SB_MAX_SEQ = 75


def sbert_shapes() -> dict[str, tuple[int, ...]]:
    h, i = SB_HIDDEN, SB_INTER
    shapes = {
        "embeddings.word_embeddings.weight": (SB_VOCAB, h),
        "embeddings.position_embeddings.weight": (SB_POS, h),
        "embeddings.token_type_embeddings.weight": (SB_TYPES, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for layer in range(SB_LAYERS):
        p = f"encoder.layer.{layer}."
        for q in ("query", "key", "value"):
            shapes[p + f"attention.self.{q}.weight"] = (h, h)
            shapes[p + f"attention.self.{q}.bias"] = (h,)
        shapes[p + "attention.output.dense.weight"] = (h, h)
        shapes[p + "attention.output.dense.bias"] = (h,)
        shapes[p + "attention.output.LayerNorm.weight"] = (h,)
        shapes[p + "attention.output.LayerNorm.bias"] = (h,)
        shapes[p + "intermediate.dense.weight"] = (i, h)
        shapes[p + "intermediate.dense.bias"] = (i,)
        shapes[p + "output.dense.weight"] = (h, i)
        shapes[p + "output.dense.bias"] = (h,)
        shapes[p + "output.LayerNorm.weight"] = (h,)
        shapes[p + "output.LayerNorm.bias"] = (h,)
    return shapes


CHECKSUM_TENSORS = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "encoder.layer.0.attention.self.query.weight",
    "encoder.layer.0.attention.self.query.bias",
    "encoder.layer.5.intermediate.dense.weight",
    "encoder.layer.11.output.LayerNorm.bias",
]


def make_sbert_base(minilm_dir: Path, texts: list[str], tmp_root: Path) -> dict:
    t0 = time.time()
    shapes = sbert_shapes()
    assert len(shapes) == 5 + 16 * SB_LAYERS
    tensors = {}
    rng = np.random.default_rng(12345)  # only picks which indices get the scalar cross-check
    for name, shape in shapes.items():
        tensors[name] = seeded_tensor(name, shape)
        flat = tensors[name].reshape(-1)
        probe = [0, 1, 2, 3, flat.size - 1] + [int(k) for k in rng.integers(0, flat.size, 4)]
        for j in probe:
            assert flat[j].view(np.uint32) == seeded_scalar(name, j).view(np.uint32), (name, j)
    n_params = sum(t.size for t in tensors.values())
    checksums = {}
    for name in CHECKSUM_TENSORS:
        flat = tensors[name].reshape(-1).astype(np.float64)
        checksums[name] = {
            "shape": list(tensors[name].shape),
            "first4": F32List(tensors[name].reshape(-1)[:4]),
            "sum_f64": math.fsum(flat.tolist()),
            "sum_abs_f64": math.fsum(np.abs(flat).tolist()),
        }
    t_gen = time.time() - t0

    folder = tmp_root / "sbert-base-seeded"
    folder.mkdir()
    safetensors.numpy.save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": SB_VOCAB,
        "hidden_size": SB_HIDDEN,
        "num_hidden_layers": SB_LAYERS,
        "num_attention_heads": 12,
        "intermediate_size": SB_INTER,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": SB_POS,
        "type_vocab_size": SB_TYPES,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for fn in TOKENIZER_FILES:
        shutil.copy(minilm_dir / fn, folder / fn)
    write_st_files(folder, SB_MAX_SEQ, pooling_config(SB_HIDDEN, ("mean",), full_legacy=False))

    info = loading_info(folder)
    print(f"[sbert-base] transformers load report: {info}")
    assert info["missing_keys"] == ["pooler.dense.bias", "pooler.dense.weight"], info
    assert not any(info[k] for k in ("unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert not info.get("conversion_errors"), info

    model = load_st_folder(folder, SB_MAX_SEQ, ["Transformer", "Pooling"], "mean", "bert")
    # Every generated tensor must have reached the model unchanged (nothing re-initialised).
    sd = model[0].auto_model.state_dict()
    for name, arr in tensors.items():
        assert sd[name].dtype == torch.float32
        assert np.array_equal(sd[name].numpy().view(np.uint32), arr.view(np.uint32)), name

    idx = list(range(N_CORE)) + [boundary_index(73), boundary_index(74)]
    sub = [texts[i] for i in idx]
    ids, lens, full = checked_input_ids(model, folder / "tokenizer.json", sub, SB_MAX_SEQ, ends=(101, 102))
    assert max(lens) == SB_MAX_SEQ and lens[-2] == SB_MAX_SEQ and lens[-1] == SB_MAX_SEQ
    emb = encode(model, sub)
    t_all = time.time() - t0
    print(f"[sbert-base] {n_params:,} params generated in {t_gen:.1f}s; {len(sub)} texts; token counts "
          f"{min(lens)}..{max(lens)}; attn={model[0].auto_model.config._attn_implementation}; "
          f"safetensors {fsize(folder / 'model.safetensors') / 1e6:.0f} MB (temp, not kept); total {t_all:.1f}s")
    out = {
        "model": "sbert-base-seeded",
        "spec": SEED_SPEC,
        **run_info(),
        "config": config,
        "max_seq_length": SB_MAX_SEQ,
        "normalized": False,
        "num_parameters": int(n_params),
        "tensor_names": list(shapes),
        "weight_checksums": checksums,
        "text_indices": idx,
        "texts": StrRows(sub),
        "num_tokens_untruncated": full,
        "input_ids": IntRows(ids),
        "embeddings": F32Rows(emb),
    }
    path = FIXTURES / "sbert_base_seeded_reference.json"
    write_json(path, out)
    check_f32_roundtrip(path, ["embeddings"], emb)
    return {"max_seq_length": SB_MAX_SEQ, "params": n_params, "texts": len(sub)}


# --------------------------------------------------------------------------------------------


def timed(name: str, make, *args):
    """``make(*args)``, then a line saying how long it took; returns its result."""
    t = time.time()
    out = make(*args)
    print(f"[{name}] done in {time.time() - t:.1f}s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minilm-dir", type=Path,
                    help="local copy of sentence-transformers/all-MiniLM-L6-v2 (required unless "
                         "--torch-fixtures-only or --only)")
    ap.add_argument("--torch-fixtures-only", action="store_true",
                    help="only (re)write the torch.save fixtures from the committed tiny-bert "
                         "(see make_torch_fixtures); leaves every other fixture untouched")
    ap.add_argument("--only", choices=["roberta", "mpnet", "distilbert", "prompts", "exclude-prompt", "quantize",
                                       "tokenizer-class", "modernbert", "xlmr-spm", "nomic", "gte", "jina"],
                    default=None,
                    help="roberta: only (re)write tiny-roberta/, tiny-xlm-roberta/ and "
                         "tiny_roberta_reference.json; mpnet: only (re)write tiny-mpnet/ and "
                         "tiny_mpnet_reference.json (its vocab from --minilm-dir if given, else from "
                         "the committed tiny-bert/vocab.txt); distilbert: only (re)write "
                         "tiny-distilbert/, tiny-bert-dense/, tiny-bert-dense-identity/ and "
                         "tiny_distilbert_dense_reference.json (from the committed tiny-bert/); "
                         "prompts: only (re)write tiny-bert-prompts/ and tiny_prompts_reference.json "
                         "(from the committed tiny-bert/); exclude-prompt: only (re)write "
                         "tiny_exclude_prompt_reference.json (from the committed tiny-bert-prompts/); quantize: only "
                         "(re)write tiny_quantize_reference.json (from the committed tiny-bert/); tokenizer-class: only "
                         "(re)write tokenizer_class_reference.json (from the committed tiny-bert/); modernbert: only (re)write tiny-modernbert/, "
                         "tiny-modernbert-bias/ and tiny_modernbert_reference.json; xlmr-spm: only (re)write "
                         "tiny-xlmr-spm/ and tiny_xlmr_spm_reference.json; nomic: only (re)write tiny-nomic-bert/, "
                         "tiny-nomic-bert-theta/ and tiny_nomic_reference.json; gte: only (re)write tiny-gte/, "
                         "tiny-gte-multilingual/, tiny-gte-new/ and tiny_gte_reference.json; jina: only (re)write "
                         "tiny-jina/, tiny-jina-reglu/, tiny-jina-original/ and tiny_jina_reference.json. None needs "
                         "--minilm-dir; all leave every other fixture untouched")
    ap.add_argument("--tmp-dir", type=Path, default=None,
                    help="where to build the ~440 MB seeded BERT-base folder (deleted afterwards)")
    args = ap.parse_args()
    if args.torch_fixtures_only and args.only:
        ap.error("--torch-fixtures-only and --only are exclusive")
    if args.torch_fixtures_only:
        torch.set_num_threads(1)
        make_torch_fixtures()
        return
    if args.only is not None:
        torch.set_num_threads(1)
        t = time.time()
        if args.only == "roberta":
            make_roberta()
            written = [FIXTURES / f for f in ROBERTA] + [FIXTURES / "tiny_roberta_reference.json"]
        elif args.only == "mpnet":
            make_mpnet(args.minilm_dir.resolve() if args.minilm_dir else None)
            written = [FIXTURES / MPNET_FOLDER, FIXTURES / "tiny_mpnet_reference.json"]
        elif args.only == "distilbert":
            make_distilbert_dense()
            written = [FIXTURES / f for f in DENSE_MODELS] + [FIXTURES / "tiny_distilbert_dense_reference.json"]
        elif args.only == "prompts":
            make_prompts()
            written = [FIXTURES / PROMPTS_FOLDER, FIXTURES / "tiny_prompts_reference.json"]
        elif args.only == "exclude-prompt":
            make_exclude_prompt()
            written = [FIXTURES / "tiny_exclude_prompt_reference.json"]
        elif args.only == "quantize":
            make_quantize()
            written = [FIXTURES / "tiny_quantize_reference.json"]
        elif args.only == "tokenizer-class":
            make_tokenizer_classes()
            written = [FIXTURES / "tokenizer_class_reference.json"]
        elif args.only == "nomic":
            make_nomic()
            written = [FIXTURES / f for f in NOMIC] + [FIXTURES / "tiny_nomic_reference.json"]
        elif args.only == "gte":
            make_gte()
            written = [FIXTURES / f for f in GTE] + [FIXTURES / "tiny_gte_reference.json"]
        elif args.only == "jina":
            make_jina()
            written = [FIXTURES / f for f in JINA] + [FIXTURES / "tiny_jina_reference.json"]
        elif args.only == "xlmr-spm":
            make_xlmr_spm()
            written = [FIXTURES / XLMR_SPM_FOLDER, FIXTURES / "tiny_xlmr_spm_reference.json"]
        else:
            make_modernbert()
            written = [FIXTURES / f for f in MODERNBERT] + [FIXTURES / "tiny_modernbert_reference.json"]
        print(f"[{args.only}] done in {time.time() - t:.1f}s")
        for p in written:
            print(f"  {p.relative_to(REPO)}{'/' if p.is_dir() else ''}  {fsize(p):>10,} bytes")
            if p.is_dir():
                print_folder_files(p)
            else:
                print(f"      sha256:{sha256(p)}")
        return
    if args.minilm_dir is None:
        ap.error("--minilm-dir is required")
    minilm_dir = args.minilm_dir.resolve()
    for fn in ("config.json", "model.safetensors", "modules.json", "sentence_bert_config.json", *TOKENIZER_FILES):
        if not (minilm_dir / fn).is_file():
            sys.exit(f"missing {minilm_dir / fn}")

    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.time()
    FIXTURES.mkdir(parents=True, exist_ok=True)

    texts = all_texts()
    write_json(FIXTURES / "texts.json", StrRows(texts))
    assert json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8")) == texts

    mini = timed("minilm", make_minilm, minilm_dir, texts)
    tiny = timed("tiny", make_tiny, minilm_dir, texts)
    make_torch_fixtures()
    rob = timed("roberta", make_roberta)
    mp = timed("mpnet", make_mpnet, minilm_dir)
    db = timed("distilbert", make_distilbert_dense)
    pr = timed("prompts", make_prompts)
    timed("exclude-prompt", make_exclude_prompt)
    timed("quantize", make_quantize)
    timed("tokenizer-class", make_tokenizer_classes)
    mb = timed("modernbert", make_modernbert)
    xs = timed("xlmr-spm", make_xlmr_spm)
    timed("nomic", make_nomic)
    timed("gte", make_gte)
    timed("jina", make_jina)
    t = time.time()
    with tempfile.TemporaryDirectory(prefix="ember-ref-", dir=args.tmp_dir) as tmp:
        sb = make_sbert_base(minilm_dir, texts, Path(tmp))
    print(f"[sbert-base] done in {time.time() - t:.1f}s")

    print("\n=== summary ===")
    print("versions:", json.dumps(versions()))
    print(f"texts: {len(texts)} (core {N_CORE}); max_seq_length: minilm {mini['max_seq_length']}, "
          f"tiny {TINY_MAX_SEQ}, sbert-base-seeded {sb['max_seq_length']}")
    print(f"tiny: vocab {tiny['vocab']}, {tiny['cases']} cases x {tiny['texts']} texts; "
          f"sbert-base-seeded: {sb['params']:,} params, {sb['texts']} texts")
    print(f"roberta: {', '.join(ROBERTA)}, {len(rob['texts'])} texts, max_seq_length {RB_MAX_SEQ}")
    print(f"mpnet: {MPNET_FOLDER}, {len(mp['texts'])} texts, max_seq_length {MP_MAX_SEQ}")
    print(f"distilbert + Dense: {', '.join(DENSE_MODELS)}, {len(db['texts'])} texts, max_seq_length {DB_MAX_SEQ}")
    print(f"prompts: {PROMPTS_FOLDER}, {len(pr['texts'])} texts x {len(pr['cases'])} cases, "
          f"max_seq_length {TINY_MAX_SEQ}")
    print(f"modernbert: {', '.join(MODERNBERT)}, {len(mb['texts'])} texts, max_seq_length {MB_MAX_SEQ}")
    print(f"xlmr-spm: {XLMR_SPM_FOLDER}, {len(xs['texts'])} texts, max_seq_length {RB_MAX_SEQ}")
    for p in sorted(FIXTURES.iterdir()):
        extra = f"  sha256:{sha256(p)}" if p.is_file() else ""
        print(f"  {p.relative_to(REPO)}{'/' if p.is_dir() else ''}  {fsize(p):>10,} bytes{extra}")
        if p.is_dir():
            print_folder_files(p)
    print(f"total time {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
