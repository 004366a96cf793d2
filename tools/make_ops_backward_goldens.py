#!/usr/bin/env python3
"""Golden gradients for tests/test_ops_backward.c, from torch autograd.

Each case draws fp32 inputs and an upstream gradient dy, runs the PyTorch
forward in float64 on them (so the stored gradients are the exact gradients
of the fp32 inputs, rounded once to fp32) and stores the inputs and
autograd's gradients of L = sum(dy * f(inputs)) as fp32:

  conv/{x,w,b,dy,dx,dw,db}      F.conv2d 3x3, stride 1, pad 1: x [2,5,9,7], w [6,5,3,3]
  conv_s2/{...}                 the same with stride 2 (the UNet's downsampler)
  gn/{x,gamma,beta,dy,dx,dgamma,dbeta}
                                F.silu(F.group_norm(x, 32, gamma, beta, eps=1e-5)), x [2,64,5,3]
  ln/{x,gamma,beta,dy,dx,dgamma,dbeta}
                                F.layer_norm over the last axis, eps 1e-5, x [2,7,24]
  att/{q,k,v,dy,dq,dk,dv}       softmax(scale q k^T) v with 3 heads of 8, scale 8^-0.5,
                                q [2,9,24], k/v [2,11,24] (not causal)
  att_causal/{...}              causal, Tq = Tk = 10
  geglu/{x,dy,dx}               a * F.gelu(g) for a, g = x.chunk(2, -1), x [2,5,22]

Usage: python3 tools/make_ops_backward_goldens.py [out.safetensors]
"""
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                         "ops_backward.safetensors")
torch.manual_seed(20240611)
T = {}


def rnd(*shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape) * (hi - lo) + lo).float()


def case(name, fn, inputs, grads):
    """inputs: dict name -> fp32 tensor; grads: the input names to differentiate."""
    xs = {k: v.double().requires_grad_(k in grads) for k, v in inputs.items()}
    y = fn(**xs)
    dy = rnd(*y.shape)
    (y * dy.double()).sum().backward()
    for k, v in inputs.items():
        T[f"{name}/{k}"] = v
    T[f"{name}/dy"] = dy
    for k in grads:
        T[f"{name}/d{k}"] = xs[k].grad.float()


for name, stride in (("conv", 1), ("conv_s2", 2)):
    case(name, lambda x, w, b, s=stride: F.conv2d(x, w, b, stride=s, padding=1),
         dict(x=rnd(2, 5, 9, 7), w=rnd(6, 5, 3, 3, lo=-0.3, hi=0.3), b=rnd(6)), ("x", "w", "b"))

case("gn", lambda x, gamma, beta: F.silu(F.group_norm(x, 32, gamma, beta, eps=1e-5)),
     dict(x=rnd(2, 64, 5, 3, lo=-1.5, hi=2.5), gamma=rnd(64, lo=0.5, hi=1.5), beta=rnd(64)), ("x", "gamma", "beta"))

case("ln", lambda x, gamma, beta: F.layer_norm(x, (24,), gamma, beta, eps=1e-5),
     dict(x=rnd(2, 7, 24, lo=-2, hi=3), gamma=rnd(24, lo=0.5, hi=1.5), beta=rnd(24)), ("x", "gamma", "beta"))


def attention(q, k, v, causal=False, heads=3):
    B, Tq, HD = q.shape
    Tk, D = k.shape[1], HD // heads
    qh = q.view(B, Tq, heads, D).transpose(1, 2)
    kh = k.view(B, Tk, heads, D).transpose(1, 2)
    vh = v.view(B, Tk, heads, D).transpose(1, 2)
    s = qh @ kh.transpose(-1, -2) * D ** -0.5
    if causal:
        s = s.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool).triu(1), float("-inf"))
    return (s.softmax(-1) @ vh).transpose(1, 2).reshape(B, Tq, HD)


case("att", attention, dict(q=rnd(2, 9, 24), k=rnd(2, 11, 24), v=rnd(2, 11, 24)), ("q", "k", "v"))
case("att_causal", lambda q, k, v: attention(q, k, v, causal=True),
     dict(q=rnd(2, 10, 24), k=rnd(2, 10, 24), v=rnd(2, 10, 24)), ("q", "k", "v"))


def geglu(x):
    a, g = x.chunk(2, -1)
    return a * F.gelu(g)


case("geglu", geglu, dict(x=rnd(2, 5, 22, lo=-3, hi=3)), ("x",))

save_file({k: v.contiguous() for k, v in T.items()}, OUT)
print(f"wrote {OUT}: {sum(v.numel() for v in T.values())} floats")
