"""Small PyTorch models the tests export (imported as `models_under_test:factory`)."""

import torch


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.layer(x)


def mlp():
    torch.manual_seed(0)
    return MLP()


class MultiIO(torch.nn.Module):
    """Three inputs (int64 with a variable dim, float32, bool) and two outputs, one a scalar per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(10, 3)
        self.layer = torch.nn.Linear(3 + 5, 2)

    def forward(self, tokens, feats, mask):
        hidden = self.layer(torch.cat([self.embedding(tokens).mean(1), feats], dim=1))
        return hidden, (hidden * mask.float()).sum(1)


def multi():
    torch.manual_seed(0)
    return MultiIO()


class DataDependent(torch.nn.Module):
    """Branches on the data: tracing bakes in one branch, so the export differs from eager PyTorch."""

    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return -x


def broken():
    return DataDependent()


def not_a_module():
    return 3


def raises():
    raise RuntimeError("weights file missing")
