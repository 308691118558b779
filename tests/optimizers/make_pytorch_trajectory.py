"""Make tests/optimizers/pytorch_trajectory.npz: trajectories of a small network trained by
PyTorch, which batchwise must reproduce under conventions::pytorch.

Run from the repository root with a Python that has torch and numpy:

    python tests/optimizers/make_pytorch_trajectory.py

The network is Linear(6, 8, bias=False) -> BatchNorm1d(8, eps=1e-3, momentum=0.1) -> ReLU ->
Linear(8, 3), trained with cross-entropy on logits (the mean over the batch) for 8 steps of 16
samples, in float32 on the CPU. It is trained twice from the same initial weights:

  adam: Adam(lr=0.01, betas=(0.9, 0.999), eps=0.1). The large epsilon makes PyTorch's placement
        of epsilon (added to sqrt(v_hat), after the bias correction) differ visibly from
        Keras's (added to sqrt(v) before it); BatchNorm's running variance is PyTorch's
        unbiased one.
  sgd:  SGD(momentum=0.9) with a learning rate that changes every step (0.2 * 0.7^step), where
        PyTorch's momentum buffer (b = mu b + g; w -= lr b) differs from Keras's velocity
        (v = mu v - lr g; w += v).

Arrays are in batchwise's (Keras's) layout: kernels (in, out), i.e. torch's weight transposed.
  x (8, 16, 6), y (8, 16) int64 labels, lr_sgd (8,)
  init/<name>                 the initial variables
  adam/<step>/<name>          every variable after step 1..8 (BatchNorm's running statistics too)
  sgd/<step>/<name>           the same for the SGD run
Names: dense/kernel, batch_normalization/gamma, batch_normalization/beta,
batch_normalization/moving_mean, batch_normalization/moving_variance, dense_1/kernel,
dense_1/bias.
"""

import os

import numpy as np
import torch

STEPS, BATCH = 8, 16


def make_net(init):
    lin1 = torch.nn.Linear(6, 8, bias=False)
    bn = torch.nn.BatchNorm1d(8, eps=1e-3, momentum=0.1)
    lin2 = torch.nn.Linear(8, 3)
    with torch.no_grad():
        lin1.weight.copy_(torch.from_numpy(init["dense/kernel"].T))
        lin2.weight.copy_(torch.from_numpy(init["dense_1/kernel"].T))
        lin2.bias.copy_(torch.from_numpy(init["dense_1/bias"]))
    return lin1, bn, lin2


def state(lin1, bn, lin2):
    as_np = lambda t: t.detach().numpy().astype(np.float32).copy()
    return {
        "dense/kernel": as_np(lin1.weight).T.copy(),
        "batch_normalization/gamma": as_np(bn.weight),
        "batch_normalization/beta": as_np(bn.bias),
        "batch_normalization/moving_mean": as_np(bn.running_mean),
        "batch_normalization/moving_variance": as_np(bn.running_var),
        "dense_1/kernel": as_np(lin2.weight).T.copy(),
        "dense_1/bias": as_np(lin2.bias),
    }


def train(kind, init, x, y, lr_sgd):
    lin1, bn, lin2 = make_net(init)
    params = list(lin1.parameters()) + list(bn.parameters()) + list(lin2.parameters())
    if kind == "adam":
        opt = torch.optim.Adam(params, lr=0.01, betas=(0.9, 0.999), eps=0.1)
    else:
        opt = torch.optim.SGD(params, lr=float(lr_sgd[0]), momentum=0.9)
    out = {}
    for step in range(STEPS):
        if kind == "sgd":
            for group in opt.param_groups:
                group["lr"] = float(lr_sgd[step])
        opt.zero_grad()
        logits = lin2(torch.relu(bn(lin1(torch.from_numpy(x[step])))))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y[step]))
        loss.backward()
        opt.step()
        for name, value in state(lin1, bn, lin2).items():
            out[f"{kind}/{step + 1}/{name}"] = value
    return out


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(2026)
    x = rng.standard_normal((STEPS, BATCH, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=(STEPS, BATCH)).astype(np.int64)
    lr_sgd = (0.2 * 0.7 ** np.arange(STEPS)).astype(np.float32)
    init = {
        "dense/kernel": (rng.standard_normal((6, 8)) * 0.5).astype(np.float32),
        "batch_normalization/gamma": np.ones(8, np.float32),
        "batch_normalization/beta": np.zeros(8, np.float32),
        "batch_normalization/moving_mean": np.zeros(8, np.float32),
        "batch_normalization/moving_variance": np.ones(8, np.float32),
        "dense_1/kernel": (rng.standard_normal((8, 3)) * 0.5).astype(np.float32),
        "dense_1/bias": (rng.standard_normal(3) * 0.1).astype(np.float32),
    }
    arrays = {"x": x, "y": y, "lr_sgd": lr_sgd}
    arrays.update({f"init/{k}": v for k, v in init.items()})
    arrays.update(train("adam", init, x, y, lr_sgd))
    arrays.update(train("sgd", init, x, y, lr_sgd))
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch_trajectory.npz")
    np.savez(path, **arrays)
    print(f"wrote {path}: {len(arrays)} arrays, torch {torch.__version__}")


if __name__ == "__main__":
    main()
