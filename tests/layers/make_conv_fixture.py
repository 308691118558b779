"""Make tests/layers/conv_fixture.npz, the reference fixture for batchwise's
convolution, pooling and normalisation layers.

Run from the repository root:

    /usr/bin/python3 tests/layers/make_conv_fixture.py

The expected outputs are computed by PyTorch (torch.nn.functional), not by a
hand-written loop, but stated in Keras's conventions: tensors are channels-last
(NHWC) and convolution kernels are in Keras layout (kh, kw, in_channels,
filters). Internally the tensors are converted to torch's NCHW and the kernels
to (filters, in_channels, kh, kw). Keras/TF 'same' padding (extra row/column at
the bottom/right) is applied explicitly with F.pad. Inputs are drawn with
numpy's default_rng(2026), rounded to float32, and everything is computed in
float64 from those rounded values; all arrays are stored as float32 in an
uncompressed .npz.

Arrays:
  x (2,7,6,3)
  conv_a: Conv2D(4, (3,3), valid, bias)                   conv_a_kernel, conv_a_bias, conv_a_y
  conv_b: Conv2D(2, (4,2), strides (2,2), same, no bias)  conv_b_kernel, conv_b_y
  conv_c: Conv2D(3, (2,3), dilation (2,2), valid, bias)   conv_c_kernel, conv_c_bias, conv_c_y
  conv_d: Conv2D(2, (3,3), dilation (2,1), same, bias)    conv_d_kernel, conv_d_bias, conv_d_y
  maxpool_a: MaxPooling2D((2,2))                          maxpool_a_y
  maxpool_b: MaxPooling2D((3,3), strides (2,2), same)     maxpool_b_y
  avgpool_a: AveragePooling2D((2,2))                      avgpool_a_y
  avgpool_b: AveragePooling2D((3,3), strides (2,2), same) avgpool_b_y  (divides by real elements)
  gap: GlobalAveragePooling2D                             gap_y
  norm_x = conv_a_y, and on it (epsilon 1e-3):
    GroupNormalization(groups=2)                          gn_gamma, gn_beta, gn_y
    LayerNormalization(axis=-1)                           ln_gamma, ln_beta, ln_y
    BatchNormalization, training mode (batch statistics)  bn_gamma, bn_beta, bn_y
"""

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv_fixture.npz")

rng = np.random.default_rng(2026)


def draw(shape, lo, hi):
    """Uniform draw, rounded to float32 (what is stored), returned as float64."""
    return rng.uniform(lo, hi, size=shape).astype(np.float32).astype(np.float64)


def to_nchw(a):
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


def to_nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1).copy()


def keras_kernel_to_torch(k):
    # (kh, kw, in, out) -> (out, in, kh, kw)
    return torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))


def same_pads(size, k, stride, dilation=1):
    """Keras/TF 'same': (before, after), the extra one after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_same_nchw(t, kh, kw, sh, sw, dh=1, dw=1, value=0.0):
    top, bottom = same_pads(t.shape[2], kh, sh, dh)
    left, right = same_pads(t.shape[3], kw, sw, dw)
    return F.pad(t, (left, right, top, bottom), mode="constant", value=value)


def conv(x, kernel, bias, strides=(1, 1), dilation=(1, 1), padding="valid"):
    xt = to_nchw(x)
    kh, kw = kernel.shape[0], kernel.shape[1]
    if padding == "same":
        xt = pad_same_nchw(xt, kh, kw, strides[0], strides[1], dilation[0], dilation[1])
    bt = None if bias is None else torch.from_numpy(bias)
    y = F.conv2d(xt, keras_kernel_to_torch(kernel), bt, stride=strides, padding=0,
                 dilation=dilation)
    return to_nhwc(y)


arrays = {}

# ---- input -----------------------------------------------------------------
x = draw((2, 7, 6, 3), -1.0, 1.0)
arrays["x"] = x

# ---- convolutions ----------------------------------------------------------
conv_a_kernel = draw((3, 3, 3, 4), -0.5, 0.5)
conv_a_bias = draw((4,), -0.5, 0.5)
conv_a_y = conv(x, conv_a_kernel, conv_a_bias)
arrays.update(conv_a_kernel=conv_a_kernel, conv_a_bias=conv_a_bias, conv_a_y=conv_a_y)

conv_b_kernel = draw((4, 2, 3, 2), -0.5, 0.5)
conv_b_y = conv(x, conv_b_kernel, None, strides=(2, 2), padding="same")
arrays.update(conv_b_kernel=conv_b_kernel, conv_b_y=conv_b_y)

conv_c_kernel = draw((2, 3, 3, 3), -0.5, 0.5)
conv_c_bias = draw((3,), -0.5, 0.5)
conv_c_y = conv(x, conv_c_kernel, conv_c_bias, dilation=(2, 2))
arrays.update(conv_c_kernel=conv_c_kernel, conv_c_bias=conv_c_bias, conv_c_y=conv_c_y)

conv_d_kernel = draw((3, 3, 3, 2), -0.5, 0.5)
conv_d_bias = draw((2,), -0.5, 0.5)
conv_d_y = conv(x, conv_d_kernel, conv_d_bias, dilation=(2, 1), padding="same")
arrays.update(conv_d_kernel=conv_d_kernel, conv_d_bias=conv_d_bias, conv_d_y=conv_d_y)

# ---- pooling ---------------------------------------------------------------
xt = to_nchw(x)
arrays["maxpool_a_y"] = to_nhwc(F.max_pool2d(xt, (2, 2), stride=(2, 2)))
arrays["maxpool_b_y"] = to_nhwc(F.max_pool2d(
    pad_same_nchw(xt, 3, 3, 2, 2, value=-math.inf), (3, 3), stride=(2, 2)))

arrays["avgpool_a_y"] = to_nhwc(F.avg_pool2d(xt, (2, 2), stride=(2, 2)))
area = 9.0
sums = F.avg_pool2d(pad_same_nchw(xt, 3, 3, 2, 2), (3, 3), stride=(2, 2)) * area
counts = F.avg_pool2d(pad_same_nchw(torch.ones_like(xt), 3, 3, 2, 2), (3, 3),
                      stride=(2, 2)) * area
arrays["avgpool_b_y"] = to_nhwc(sums / counts)

arrays["gap_y"] = xt.mean(dim=(2, 3)).numpy().copy()

# ---- normalisation (on norm_x = conv_a_y, as stored in float32) -------------
EPS = 1e-3
norm_x = conv_a_y.astype(np.float32).astype(np.float64)
arrays["norm_x"] = norm_x
nt = to_nchw(norm_x)

gn_gamma = draw((4,), 0.5, 1.5)
gn_beta = draw((4,), -0.5, 0.5)
arrays.update(gn_gamma=gn_gamma, gn_beta=gn_beta)
arrays["gn_y"] = to_nhwc(F.group_norm(nt, 2, torch.from_numpy(gn_gamma),
                                      torch.from_numpy(gn_beta), eps=EPS))

ln_gamma = draw((4,), 0.5, 1.5)
ln_beta = draw((4,), -0.5, 0.5)
arrays.update(ln_gamma=ln_gamma, ln_beta=ln_beta)
arrays["ln_y"] = F.layer_norm(torch.from_numpy(norm_x), (4,), torch.from_numpy(ln_gamma),
                              torch.from_numpy(ln_beta), eps=EPS).numpy().copy()

bn_gamma = draw((4,), 0.5, 1.5)
bn_beta = draw((4,), -0.5, 0.5)
arrays.update(bn_gamma=bn_gamma, bn_beta=bn_beta)
arrays["bn_y"] = to_nhwc(F.batch_norm(nt, None, None, torch.from_numpy(bn_gamma),
                                      torch.from_numpy(bn_beta), training=True, eps=EPS))

# ---- shape checks ----------------------------------------------------------
expected_shapes = {
    "x": (2, 7, 6, 3),
    "conv_a_kernel": (3, 3, 3, 4), "conv_a_bias": (4,), "conv_a_y": (2, 5, 4, 4),
    "conv_b_kernel": (4, 2, 3, 2), "conv_b_y": (2, 4, 3, 2),
    "conv_c_kernel": (2, 3, 3, 3), "conv_c_bias": (3,), "conv_c_y": (2, 5, 2, 3),
    "conv_d_kernel": (3, 3, 3, 2), "conv_d_bias": (2,), "conv_d_y": (2, 7, 6, 2),
    "maxpool_a_y": (2, 3, 3, 3), "maxpool_b_y": (2, 4, 3, 3),
    "avgpool_a_y": (2, 3, 3, 3), "avgpool_b_y": (2, 4, 3, 3),
    "gap_y": (2, 3),
    "norm_x": (2, 5, 4, 4),
    "gn_gamma": (4,), "gn_beta": (4,), "gn_y": (2, 5, 4, 4),
    "ln_gamma": (4,), "ln_beta": (4,), "ln_y": (2, 5, 4, 4),
    "bn_gamma": (4,), "bn_beta": (4,), "bn_y": (2, 5, 4, 4),
}
assert set(arrays) == set(expected_shapes), set(arrays) ^ set(expected_shapes)
for name, shape in expected_shapes.items():
    assert arrays[name].shape == shape, (name, arrays[name].shape, shape)
    assert np.all(np.isfinite(arrays[name])), name
assert same_pads(7, 4, 2) == (1, 2) and same_pads(6, 2, 2) == (0, 0)
assert same_pads(7, 3, 1, 2) == (2, 2) and same_pads(6, 3, 1, 1) == (1, 1)
assert same_pads(7, 3, 2) == (1, 1) and same_pads(6, 3, 2) == (0, 1)

# ---- independent numpy checks (catch layout-conversion mistakes) -----------
TOL = 1e-12

# conv_a: direct loop in Keras layout, y[n,i,j,f] = b[f] + sum x[n,i+di,j+dj,c] k[di,dj,c,f]
ref = np.zeros((2, 5, 4, 4))
for n in range(2):
    for i in range(5):
        for j in range(4):
            for f in range(4):
                s = conv_a_bias[f]
                for di in range(3):
                    for dj in range(3):
                        for c in range(3):
                            s += x[n, i + di, j + dj, c] * conv_a_kernel[di, dj, c, f]
                ref[n, i, j, f] = s
assert np.max(np.abs(ref - conv_a_y)) < TOL, np.max(np.abs(ref - conv_a_y))


def loop_conv(x, k, b, stride, dil, pads):
    """Generic direct conv in NHWC/Keras layout with explicit (top, left) padding."""
    N, H, W, C = x.shape
    kh, kw, _, F_ = k.shape
    (top, bottom), (left, right) = pads
    xp = np.zeros((N, H + top + bottom, W + left + right, C))
    xp[:, top:top + H, left:left + W, :] = x
    oh = (xp.shape[1] - (kh - 1) * dil[0] - 1) // stride[0] + 1
    ow = (xp.shape[2] - (kw - 1) * dil[1] - 1) // stride[1] + 1
    y = np.zeros((N, oh, ow, F_))
    for i in range(oh):
        for j in range(ow):
            for di in range(kh):
                for dj in range(kw):
                    patch = xp[:, i * stride[0] + di * dil[0], j * stride[1] + dj * dil[1], :]
                    y[:, i, j, :] += patch @ k[di, dj]
    return y + (0 if b is None else b)


assert np.max(np.abs(loop_conv(x, conv_b_kernel, None, (2, 2), (1, 1), ((1, 2), (0, 0)))
                     - conv_b_y)) < TOL
assert np.max(np.abs(loop_conv(x, conv_c_kernel, conv_c_bias, (1, 1), (2, 2), ((0, 0), (0, 0)))
                     - conv_c_y)) < TOL
assert np.max(np.abs(loop_conv(x, conv_d_kernel, conv_d_bias, (1, 1), (2, 1), ((2, 2), (1, 1)))
                     - conv_d_y)) < TOL

# pooling 'same' windows, clipped to the real input (TF semantics)
mp = np.zeros((2, 4, 3, 3))
ap = np.zeros((2, 4, 3, 3))
for i in range(4):
    for j in range(3):
        r0, c0 = i * 2 - 1, j * 2 - 0
        win = x[:, max(r0, 0):min(r0 + 3, 7), max(c0, 0):min(c0 + 3, 6), :]
        mp[:, i, j, :] = win.max(axis=(1, 2))
        ap[:, i, j, :] = win.mean(axis=(1, 2))
assert np.max(np.abs(mp - arrays["maxpool_b_y"])) == 0.0
assert np.max(np.abs(ap - arrays["avgpool_b_y"])) < TOL
assert np.max(np.abs(x[:, :6].reshape(2, 3, 2, 3, 2, 3).max(axis=(2, 4)) - arrays["maxpool_a_y"])) == 0.0
assert np.max(np.abs(x[:, :6].reshape(2, 3, 2, 3, 2, 3).mean(axis=(2, 4))
                     - arrays["avgpool_a_y"])) < TOL
assert np.max(np.abs(x.mean(axis=(1, 2)) - arrays["gap_y"])) < TOL

# normalisations by formula
g = norm_x.reshape(2, 5, 4, 2, 2)  # channel c = group*2 + k
mu = g.mean(axis=(1, 2, 4), keepdims=True)
var = g.var(axis=(1, 2, 4), keepdims=True)
gn_ref = ((g - mu) / np.sqrt(var + EPS)).reshape(2, 5, 4, 4) * gn_gamma + gn_beta
assert np.max(np.abs(gn_ref - arrays["gn_y"])) < 1e-10
mu = norm_x.mean(axis=-1, keepdims=True)
var = norm_x.var(axis=-1, keepdims=True)
assert np.max(np.abs((norm_x - mu) / np.sqrt(var + EPS) * ln_gamma + ln_beta
                     - arrays["ln_y"])) < 1e-10
mu = norm_x.mean(axis=(0, 1, 2))
var = norm_x.var(axis=(0, 1, 2))
assert np.max(np.abs((norm_x - mu) / np.sqrt(var + EPS) * bn_gamma + bn_beta
                     - arrays["bn_y"])) < 1e-10

# ---- save ------------------------------------------------------------------
stored = {name: np.asarray(a, dtype=np.float32) for name, a in arrays.items()}
np.savez(OUT, **stored)

print(f"torch {torch.__version__}, numpy {np.__version__}")
print(f"wrote {OUT}")
for name, a in stored.items():
    print(f"  {name:14s} {str(a.shape):16s} {a.dtype}")
