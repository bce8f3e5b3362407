"""The conformance zoo: twelve small architectures built in code (no downloads), imported as `zoo:NAME`.

Each entry names its factory, its input specs as `mlctl export -i` takes them, its output names, and whether a
non-batch dim is dynamic. Models are tiny so that the whole zoo exports and serves within CI's budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Architecture:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_length: bool = False
    atol: float = 1e-4


def _seeded(cls):
    def factory():
        torch.manual_seed(0)
        return cls()

    factory.__name__ = cls.__name__
    return factory


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class CNNBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, 10)
        with torch.no_grad():  # non-trivial running statistics, so eval-mode BatchNorm is really exercised
            self.features[1].running_mean.uniform_(-0.5, 0.5)
            self.features[1].running_var.uniform_(0.5, 2.0)

    def forward(self, img):
        return self.head(self.features(img).flatten(1))


class ResidualBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, img):
        hidden = torch.relu(self.bn1(self.conv1(img)))
        hidden = torch.relu(self.bn2(self.conv2(hidden)) + img)
        return self.head(hidden.mean((2, 3)))


class TinyViT(nn.Module):
    """Patch embedding (4x4 patches of an 8x8 image), a class token, positions, one encoder layer."""

    def __init__(self):
        super().__init__()
        self.patches = nn.Conv2d(3, 16, kernel_size=4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.positions = nn.Parameter(torch.randn(1, 5, 16))
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, 5)

    def forward(self, img):
        tokens = self.patches(img).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.positions
        return self.head(self.encoder(tokens)[:, 0])


class MaskedTransformer(nn.Module):
    """Token ids and a padding mask (1 = token, 0 = padding) of one dynamic length, a 2-layer encoder, masked mean."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, 3)

    def forward(self, ids, mask):
        # the first token (a CLS token) is never padding: a row with every key padded has no defined attention
        first = torch.arange(ids.shape[1], device=ids.device) == 0
        hidden = self.encoder(self.embedding(ids), src_key_padding_mask=(mask < 0.5) & ~first)
        weights = mask.unsqueeze(-1)
        return self.head((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))


class LSTM2(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(6, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, seq):
        out, _ = self.rnn(seq)
        return self.head(out[:, -1])


class BiGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(6, 8, batch_first=True, bidirectional=True)
        self.head = nn.Linear(16, 3)

    def forward(self, seq):
        out, _ = self.rnn(seq)
        return self.head(out.mean(1))


class Conv1dSequence(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv1d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 2)

    def forward(self, signal):
        return self.head(self.conv(signal).amax(2))


class TokensAndMask(nn.Module):
    """int64 ids and a float mask: a masked mean of embeddings."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, ids, mask):
        weights = mask.unsqueeze(-1)
        return self.head((self.embedding(ids) * weights).sum(1) / weights.sum(1).clamp(min=1.0))


class DictOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):
        embedding = torch.tanh(self.body(x))
        return {"logits": self.head(embedding), "embedding": embedding}


class ScalarPerRow(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 1)

    def forward(self, x):
        return torch.sigmoid(self.layer(x)).squeeze(1)


class HalfAndBool(nn.Module):
    """An fp16 input and a bool input (features switched off where the flag is false)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(8, 3)

    def forward(self, x, keep):
        return self.layer(x.float() * keep.float())


ZOO: dict[str, tuple[Architecture, type]] = {
    arch.name: (arch, cls)
    for arch, cls in [
        (Architecture("mlp", ("x:float32:16",), ("y",)), MLP),
        (Architecture("cnn_batchnorm", ("img:float32:1,8,8",), ("logits",)), CNNBatchNorm),
        (Architecture("resnet_block", ("img:float32:4,8,8",), ("logits",)), ResidualBlock),
        (Architecture("vit", ("img:float32:3,8,8",), ("logits",)), TinyViT),
        (Architecture("transformer_masked", ("ids:int64:-1", "mask:float32:-1"), ("logits",), True), MaskedTransformer),
        (Architecture("lstm2", ("seq:float32:-1,6",), ("logits",), True), LSTM2),
        (Architecture("bigru", ("seq:float32:-1,6",), ("logits",), True), BiGRU),
        (Architecture("conv1d", ("signal:float32:4,-1",), ("logits",), True), Conv1dSequence),
        (Architecture("tokens_mask", ("ids:int64:-1", "mask:float32:-1"), ("logits",), True), TokensAndMask),
        (Architecture("dict_outputs", ("x:float32:8",), ("logits", "embedding")), DictOutputs),
        (Architecture("scalar_per_row", ("x:float32:8",), ("score",)), ScalarPerRow),
        (Architecture("fp16_bool", ("x:float16:8", "keep:bool:8"), ("y",), atol=2e-3), HalfAndBool),
    ]
}

# `zoo:<name>` factories for ExportRequest / mlctl export
globals().update({name: _seeded(cls) for name, (_arch, cls) in ZOO.items()})
