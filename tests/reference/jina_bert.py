"""JinaBERT (jina-embeddings-v2-small-en / -base-en) in PyTorch, written for Ember's reference
fixtures from the published architecture: Jina's own code (the Hugging Face repo
``jinaai/jina-bert-implementation``, loaded by those models through ``auto_map`` and
``trust_remote_code``) is not vendored here. It was checked once against that code on the
committed tiny-jina folders (see make_reference.py's ``make_jina``).

What the published code computes, for a ``bert`` config with ``"position_embedding_type":
"alibi"``:

* embeddings: ``LayerNorm(word[id] + token_type[type])``; no position table;
* each layer, post-LayerNorm as BERT: ``a = LN(dense(attn(x)) + x)`` with the attention scores
  ``q·kᵀ/√hd + mask + alibi``, ``alibi[h, i, j] = −slope_h · |j − i|`` (f32), softmax over keys;
* the feed-forward, by ``feed_forward_type``: "geglu" / "reglu": ``g = gated_layers(a)`` (no
  bias, ``[2F, H]``), ``y = wo(act(g[:F]) * g[F:])`` with ``nn.GELU()`` / ``nn.ReLU()``, then
  ``mlp.layernorm(y + a)``; "original": BERT's ``intermediate.dense`` / ``output.dense`` /
  ``output.LayerNorm`` with ``hidden_act``;
* ALiBi's slopes: ``_get_alibi_head_slopes`` (geometric for a power-of-two head count; otherwise
  the closest power of two's, then every other slope of twice that many).

``register()`` makes ``AutoModel`` build this class for BertConfig, so that sentence-transformers
loads a JinaBERT folder as it would with the remote code; ``unregister()`` undoes it.
"""

import math

import torch
from torch import nn
from transformers import AutoModel, BertConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's head slopes (Press et al.; the formula of the published code), Python floats."""

    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


def alibi_bias(n_heads: int, size: int) -> torch.Tensor:
    """``[1, heads, size, size]`` f32: ``−slope_h · |j − i|`` (an f32 slope tensor times the
    integer distances, as the published code forms it)."""
    pos = torch.arange(size)
    distance = (pos[None, :] - pos[:, None]).abs()
    slopes = torch.tensor(alibi_slopes(n_heads), dtype=torch.float32) * -1
    return (slopes[:, None, None] * distance[None]).unsqueeze(0)


class JinaSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = torch.softmax(scores + mask + bias, dim=-1)
        out = torch.matmul(probs, v).permute(0, 2, 1, 3)
        return out.reshape(x.shape)


class JinaSelfOutput(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class JinaAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self = JinaSelfAttention(config)
        self.output = JinaSelfOutput(config)

    def forward(self, x, mask, bias):
        return self.output.LayerNorm(self.output.dense(self.self(x, mask, bias)) + x)


class JinaGluMlp(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.act = {"geglu": nn.GELU(), "reglu": nn.ReLU()}[config.feed_forward_type]
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, a):
        g = self.gated_layers(a)
        gate, up = g[..., : self.intermediate_size], g[..., self.intermediate_size :]
        return self.layernorm(self.wo(self.act(gate) * up) + a)


class JinaDense(nn.Module):
    """BERT's ``intermediate`` (dense) or ``output`` (dense + LayerNorm)."""

    def __init__(self, k: int, n: int, eps: float | None = None):
        super().__init__()
        self.dense = nn.Linear(k, n)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(n, eps=eps)


class JinaLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attention = JinaAttention(config)
        self.glu = config.feed_forward_type.endswith("glu")
        if self.glu:
            self.mlp = JinaGluMlp(config)
        else:
            self.act = ACT2FN[config.hidden_act]
            self.intermediate = JinaDense(config.hidden_size, config.intermediate_size)
            self.output = JinaDense(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, x, mask, bias):
        a = self.attention(x, mask, bias)
        if self.glu:
            return self.mlp(a)
        y = self.output.dense(self.act(self.intermediate.dense(a)))
        return self.output.LayerNorm(y + a)


class JinaEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids))


class JinaEncoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.ModuleList(JinaLayer(config) for _ in range(config.num_hidden_layers))


class JinaPooler(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class JinaBertModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"

    def __init__(self, config):
        super().__init__(config)
        assert config.position_embedding_type == "alibi", config.position_embedding_type
        self.embeddings = JinaEmbeddings(config)
        self.encoder = JinaEncoder(config)
        self.pooler = JinaPooler(config)
        self.post_init()

    def _init_weights(self, module):
        # Only reached for a freshly built model; the fixtures re-randomise every parameter.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        bias = alibi_bias(self.config.num_attention_heads, input_ids.shape[1]).to(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, mask, bias)
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=self.pooler(x))


def register() -> None:
    AutoModel.register(BertConfig, JinaBertModel, exist_ok=True)


def unregister() -> None:
    AutoModel._model_mapping._extra_content.pop(BertConfig, None)
