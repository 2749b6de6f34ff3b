"""Convolution, pooling and the pieces of batch normalisation, on per-example images [C, H, W].

Layouts (per example; the batch and any index axes lead, see ir/node.py):
  image  [C, H, W]          kernel [F, C, kh, kw]          channel vector [C]

conv2d(x, w; stride, padding, dilation) is a cross-correlation, like PyTorch's conv2d:
  y[f, oh, ow] = sum_{c, i, j} x[c, oh*sh - ph + i*dh, ow*sw - pw + j*dw] * w[f, c, i, j]
with zeros outside the image; Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1. stride, padding and
dilation are an int or an (h, w) pair; padding is symmetric.

Gradients are closed under three bilinear ops, each the adjoint of another in one argument:
  conv2d(x, w)              -> [F, Ho, Wo]
  conv2d_input_grad(g, w)   -> [C, H, W]       the transposed convolution, J_x^T g
  conv2d_weight_grad(x, g)  -> [F, C, kh, kw]  per example; autodiff's reduce_to sums it
so every VJP of every one of them is again one of the three.

Pooling: maxpool2d pads with -inf (a padded cell never wins) and, like PyTorch, needs
padding <= kernel // 2 so every window holds a real cell; ties go to the first cell in
row-major window order. Its gradient routes the adjoint to that cell (maxpool2d_grad), whose
own VJP gathers at the same cells (maxpool2d_gather); the winning cell is piecewise constant
in x, so neither op passes a gradient to the x that only selects cells (see
ZERO_GRADIENT_INPUTS). avgpool2d pads with zeros and always divides by kh*kw, i.e. PyTorch's
default count_include_pad=True; its VJP is avgpool2d_grad and back. The pooling stride
defaults to the kernel, as in PyTorch.

Channel ops: channel_expand(v[C]; height, width) -> [C, H, W] (a per-channel bias, or batch
statistics broadcast over an image), channel_sum(x[C, H, W]) -> [C] its adjoint, and
global_avgpool(x[C, H, W]) -> [C].

Batch normalisation is not a per-example op: its statistics run over the batch as well as
H and W. batch_mean_per_channel(x[C, H, W]) -> [C] is the mean over the batch, H and W; its
value does not vary over the batch (it keeps x's index axes, so a value over t gets per-step
statistics). `batchnorm2d` below composes the normalisation from it, channel_expand and
elementwise ops, so its gradient (through the statistics too) comes from autodiff. See
docs/ops_conv.md for train/eval semantics and the running averages the training loop keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from graphrnn.ir.node import Context, Node
from graphrnn.ir.ops.leaf import const
from graphrnn.ir.registry import ShapeMismatch, apply, register

# Inputs of ops whose VJP returns None on purpose, with the reason.
ZERO_GRADIENT_INPUTS: dict[str, dict[int, str]] = {
    "maxpool2d_grad": {
        0: "x only chooses which cell of each window receives the adjoint; that choice is "
        "piecewise constant in x, so the derivative is zero almost everywhere"
    },
    "maxpool2d_gather": {
        0: "x only chooses which cell of each window is read; that choice is piecewise "
        "constant in x, so the derivative is zero almost everywhere"
    },
}


# ---- attributes --------------------------------------------------------------------------
def _pair(value, what: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ShapeMismatch(f"{what} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ShapeMismatch(f"{what} must be at least {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


@dataclass(frozen=True)
class ConvGeometry:
    """Sizes of one convolution or pooling window: kernel, stride, padding, dilation."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]

    def span(self) -> tuple[int, int]:
        """Extent of the dilated kernel on the padded image."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def output_hw(self, hw) -> tuple[int, int]:
        return tuple(
            (n + 2 * p - e) // s + 1
            for n, p, e, s in zip(hw, self.padding, self.span(), self.stride)
        )

    def check(self, hw) -> tuple[int, int]:
        """The output size for an input of size hw, or a sentence why there is none."""
        padded = tuple(n + 2 * p for n, p in zip(hw, self.padding))
        span = self.span()
        if padded[0] < span[0] or padded[1] < span[1]:
            raise ShapeMismatch(
                f"the window spans {span[0]}x{span[1]} (kernel {self.kernel[0]}x{self.kernel[1]}"
                f", dilation {self.dilation[0]}x{self.dilation[1]}) but the padded image is only "
                f"{padded[0]}x{padded[1]}"
            )
        return self.output_hw(hw)


def conv_geometry(kernel, stride=1, padding=0, dilation=1) -> ConvGeometry:
    return ConvGeometry(
        _pair(kernel, "the kernel size", 1),
        _pair(stride, "stride", 1),
        _pair(padding, "padding", 0),
        _pair(dilation, "dilation", 1),
    )


def geometry_of(node: Node) -> ConvGeometry:
    """The window of a conv or pooling node, whatever attributes it was built with."""
    a = node.attrs
    if node.op in ("conv2d", "conv2d_input_grad"):
        kernel = node.inputs[1].shape[2:]
    elif node.op == "conv2d_weight_grad":
        kernel = a["kernel"]
    else:
        kernel = a["kernel"]
        return conv_geometry(kernel, a.get("stride") or kernel, a.get("padding", 0))
    return conv_geometry(kernel, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1))


def _image(shape, what: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeMismatch(f"{what} must be an image [C, H, W], got rank {len(shape)}")
    return shape


def _kernel(shape) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise ShapeMismatch(f"the kernel must be [F, C, kh, kw], got rank {len(shape)}")
    return shape


# ---- NumPy helpers on aligned arrays [..., C, H, W] --------------------------------------
def _pad(x: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    if not (ph or pw):
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)]
    return np.pad(x, widths, constant_values=value)


def _windows(x: np.ndarray, geo: ConvGeometry, value: float = 0.0) -> np.ndarray:
    """A strided view [..., C, Ho, Wo, kh, kw] of the padded image: window of each output."""
    view = sliding_window_view(_pad(x, geo.padding, value), geo.span(), axis=(-2, -1))
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    return view[..., ::sh, ::sw, ::dh, ::dw]


def _columns(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """im2col: [..., Ho*Wo, C*kh*kw]."""
    win = _windows(x, geo)
    c, ho, wo, kh, kw = win.shape[-5:]
    cols = np.moveaxis(win, -5, -3)
    return cols.reshape(win.shape[:-5] + (ho * wo, c * kh * kw))


def _scatter_windows(cols: np.ndarray, geo: ConvGeometry, hw) -> np.ndarray:
    """col2im: add each window [..., C, Ho, Wo, kh, kw] back onto the image [..., C, H, W]."""
    c, ho, wo, kh, kw = cols.shape[-5:]
    (sh, sw), (dh, dw), (ph, pw) = geo.stride, geo.dilation, geo.padding
    h, w = hw
    out = np.zeros(cols.shape[:-5] + (c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            columns = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            out[..., rows, columns] += cols[..., i, j]
    return out[..., ph : ph + h, pw : pw + w]


def _lead(*arrays_and_ranks) -> tuple[int, ...]:
    return np.broadcast_shapes(*(a.shape[: a.ndim - r] for a, r in arrays_and_ranks))


# ---- conv2d and its two adjoints -----------------------------------------------------------
def _conv_geo(kernel_hw, attrs) -> ConvGeometry:
    unknown = set(attrs) - {"stride", "padding", "dilation"}
    if unknown:
        raise ShapeMismatch(f"takes stride, padding and dilation, not {sorted(unknown)}")
    return conv_geometry(
        kernel_hw, attrs.get("stride", 1), attrs.get("padding", 0), attrs.get("dilation", 1)
    )


def _conv2d_shape(shapes, **attrs):
    x, w = shapes
    c, h, wd = _image(x, "the input")
    f, cw, kh, kw = _kernel(w)
    if c != cw:
        raise ShapeMismatch(f"the image has {c} channels but the kernel expects {cw}")
    ho, wo = _conv_geo((kh, kw), attrs).check((h, wd))
    return (f, ho, wo)


def _conv2d_eval(env, node, x, w):
    geo = geometry_of(node)
    f, c, kh, kw = node.inputs[1].shape
    cols = _columns(x, geo)  # [..., Ho*Wo, C*kh*kw]
    wm = w.reshape(w.shape[:-4] + (f, c * kh * kw))
    out = np.matmul(cols, np.swapaxes(wm, -1, -2))  # [..., Ho*Wo, F]
    return np.swapaxes(out, -1, -2).reshape(out.shape[:-2] + tuple(node.shape))


def _conv_attrs(node) -> dict:
    return {k: node.attrs[k] for k in ("stride", "padding", "dilation") if k in node.attrs}


def _conv2d_vjp(node, g):
    x, w = node.inputs
    attrs = _conv_attrs(node)
    return [
        apply("conv2d_input_grad", g, w, input_hw=tuple(x.shape[1:]), **attrs),
        apply("conv2d_weight_grad", x, g, kernel=tuple(w.shape[2:]), **attrs),
    ]


register(
    "conv2d",
    shape=_conv2d_shape,
    evaluate=_conv2d_eval,
    vjp=_conv2d_vjp,
    arity=2,
    linear_in=(0, 1),
    reads_in_place=True,
)


def _input_grad_shape(shapes, *, input_hw=None, **attrs):
    if input_hw is None:
        raise ShapeMismatch("needs input_hw=(H, W), the size of the convolved image")
    g, w = shapes
    f, ho, wo = _image(g, "the output adjoint")
    fw, c, kh, kw = _kernel(w)
    if f != fw:
        raise ShapeMismatch(f"the adjoint has {f} channels but the kernel has {fw} filters")
    hw = tuple(_pair(input_hw, "input_hw", 1))
    expected = _conv_geo((kh, kw), attrs).check(hw)
    if expected != (ho, wo):
        raise ShapeMismatch(
            f"a {hw[0]}x{hw[1]} input gives a {expected[0]}x{expected[1]} output, "
            f"but the adjoint is {ho}x{wo}"
        )
    return (c,) + hw


def _input_grad_eval(env, node, g, w):
    geo = geometry_of(node)
    f, ho, wo = node.inputs[0].shape
    _, c, kh, kw = node.inputs[1].shape
    gm = np.swapaxes(g.reshape(g.shape[:-3] + (f, ho * wo)), -1, -2)  # [..., Ho*Wo, F]
    wm = w.reshape(w.shape[:-4] + (f, c * kh * kw))
    cols = np.matmul(gm, wm).reshape(_lead((g, 3), (w, 4)) + (ho, wo, c, kh, kw))
    cols = np.moveaxis(cols, (-5, -4), (-4, -3))  # [..., C, Ho, Wo, kh, kw]
    return _scatter_windows(cols, geo, node.shape[1:])


def _input_grad_vjp(node, u):
    g, w = node.inputs
    attrs = _conv_attrs(node)
    return [
        apply("conv2d", u, w, **attrs),
        apply("conv2d_weight_grad", u, g, kernel=tuple(w.shape[2:]), **attrs),
    ]


register(
    "conv2d_input_grad",
    shape=_input_grad_shape,
    evaluate=_input_grad_eval,
    vjp=_input_grad_vjp,
    arity=2,
    linear_in=(0, 1),
    reads_in_place=True,
)


def _weight_grad_shape(shapes, *, kernel=None, **attrs):
    if kernel is None:
        raise ShapeMismatch("needs kernel=(kh, kw), the size of the kernel")
    x, g = shapes
    c, h, w = _image(x, "the input")
    f, ho, wo = _image(g, "the output adjoint")
    expected = _conv_geo(kernel, attrs).check((h, w))
    if expected != (ho, wo):
        raise ShapeMismatch(
            f"a {h}x{w} input gives a {expected[0]}x{expected[1]} output, "
            f"but the adjoint is {ho}x{wo}"
        )
    return (f, c) + _pair(kernel, "the kernel size", 1)


def _weight_grad_eval(env, node, x, g):
    geo = geometry_of(node)
    cols = _columns(x, geo)  # [..., Ho*Wo, C*kh*kw]
    f, ho, wo = node.inputs[1].shape
    gm = g.reshape(g.shape[:-3] + (f, ho * wo))
    out = np.matmul(gm, cols)  # [..., F, C*kh*kw]
    return out.reshape(out.shape[:-2] + tuple(node.shape))


def _weight_grad_vjp(node, v):
    x, g = node.inputs
    attrs = _conv_attrs(node)
    return [
        apply("conv2d_input_grad", g, v, input_hw=tuple(x.shape[1:]), **attrs),
        apply("conv2d", x, v, **attrs),
    ]


register(
    "conv2d_weight_grad",
    shape=_weight_grad_shape,
    evaluate=_weight_grad_eval,
    vjp=_weight_grad_vjp,
    arity=2,
    linear_in=(0, 1),
    reads_in_place=True,
)


# ---- pooling -------------------------------------------------------------------------------
def _pool_geo(kernel, stride=None, padding=0) -> ConvGeometry:
    return conv_geometry(kernel, stride or kernel, padding)


def _pool_shape_of(x, kind: str, kernel=None, stride=None, padding=0, **attrs):
    if kernel is None:
        raise ShapeMismatch("pooling needs a kernel size: kernel=k or kernel=(kh, kw)")
    if attrs:
        raise ShapeMismatch(f"pooling takes kernel, stride and padding, not {sorted(attrs)}")
    c, h, w = _image(x, "the input")
    geo = _pool_geo(kernel, stride, padding)
    if kind == "max" and any(2 * p > k for p, k in zip(geo.padding, geo.kernel)):
        raise ShapeMismatch(
            f"max pooling padding {geo.padding} must be at most half the kernel {geo.kernel}, "
            "so that every window holds a cell of the image"
        )
    return (c,) + geo.check((h, w))


def _pool_attrs(node) -> dict:
    return {k: node.attrs[k] for k in ("kernel", "stride", "padding") if k in node.attrs}


def _argmax_windows(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Index (row-major, first on ties) of the maximum of each window: [..., C, Ho, Wo]."""
    win = _windows(x, geo, -np.inf)
    return win.reshape(win.shape[:-2] + (-1,)).argmax(axis=-1)


def _maxpool_eval(env, node, x):
    win = _windows(x, geometry_of(node), -np.inf)
    return win.max(axis=(-2, -1))


register(
    "maxpool2d",
    shape=lambda shapes, **attrs: _pool_shape_of(shapes[0], "max", **attrs),
    evaluate=_maxpool_eval,
    vjp=lambda n, g: [apply("maxpool2d_grad", n.inputs[0], g, **_pool_attrs(n))],
    arity=1,
    reads_in_place=True,
)


def _pool_grad_shape(shapes, kind, **attrs):
    if kind == "max":
        x, g = shapes
        expected = _pool_shape_of(x, kind, **attrs)
    else:
        (g,) = shapes
        if "input_hw" not in attrs:
            raise ShapeMismatch("avgpool2d_grad needs input_hw=(H, W), the pooled image's size")
        hw = _pair(attrs.pop("input_hw"), "input_hw", 1)
        x = (g[0],) + hw if len(g) == 3 else g
        expected = _pool_shape_of(x, kind, **attrs)
    if tuple(g) != expected:
        raise ShapeMismatch(
            f"an input {list(x)} pools to {list(expected)}, but the adjoint is {list(g)}"
        )
    return x


def _maxpool_grad_eval(env, node, x, g):
    geo = geometry_of(node)
    kh, kw = geo.kernel
    best = _argmax_windows(x, geo)
    lead = np.broadcast_shapes(best.shape, g.shape)
    best, g = np.broadcast_to(best, lead), np.broadcast_to(g, lead)
    cols = np.zeros(lead + (kh * kw,), dtype=g.dtype)
    np.put_along_axis(cols, best[..., None], g[..., None], axis=-1)
    return _scatter_windows(cols.reshape(lead + (kh, kw)), geo, node.shape[1:])


register(
    "maxpool2d_grad",
    shape=lambda shapes, **attrs: _pool_grad_shape(shapes, "max", **attrs),
    evaluate=_maxpool_grad_eval,
    vjp=lambda n, u: [None, apply("maxpool2d_gather", n.inputs[0], u, **_pool_attrs(n))],
    arity=2,
    linear_in=(1,),
    reads_in_place=True,
)


def _gather_shape(shapes, **attrs):
    x, u = shapes
    if tuple(x) != tuple(u):
        raise ShapeMismatch(f"the selector {list(x)} and the image {list(u)} must agree")
    return _pool_shape_of(x, "max", **attrs)


def _gather_eval(env, node, x, u):
    geo = geometry_of(node)
    best = _argmax_windows(x, geo)
    win = _windows(u, geo)
    win = win.reshape(win.shape[:-2] + (-1,))
    lead = np.broadcast_shapes(best.shape, win.shape[:-1])
    best, win = np.broadcast_to(best, lead), np.broadcast_to(win, lead + win.shape[-1:])
    return np.take_along_axis(win, best[..., None], axis=-1)[..., 0]


register(
    "maxpool2d_gather",
    shape=_gather_shape,
    evaluate=_gather_eval,
    vjp=lambda n, g: [None, apply("maxpool2d_grad", n.inputs[0], g, **_pool_attrs(n))],
    arity=2,
    linear_in=(1,),
    reads_in_place=True,
)


def _avgpool_eval(env, node, x):
    geo = geometry_of(node)
    return _windows(x, geo).sum(axis=(-2, -1)) / float(np.prod(geo.kernel))


register(
    "avgpool2d",
    shape=lambda shapes, **attrs: _pool_shape_of(shapes[0], "avg", **attrs),
    evaluate=_avgpool_eval,
    vjp=lambda n, g: [
        apply("avgpool2d_grad", g, input_hw=tuple(n.inputs[0].shape[1:]), **_pool_attrs(n))
    ],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _avgpool_grad_eval(env, node, g):
    geo = geometry_of(node)
    kh, kw = geo.kernel
    cols = np.broadcast_to((g / float(kh * kw))[..., None, None], g.shape + (kh, kw))
    return _scatter_windows(cols, geo, node.shape[1:])


register(
    "avgpool2d_grad",
    shape=lambda shapes, **attrs: _pool_grad_shape(shapes, "avg", **attrs),
    evaluate=_avgpool_grad_eval,
    vjp=lambda n, u: [apply("avgpool2d", u, **_pool_attrs(n))],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


# ---- channel ops ---------------------------------------------------------------------------
def _channel_reduce_shape(shapes, **attrs):
    (x,) = shapes
    return (_image(x, "the input")[0],)


def _global_avgpool_vjp(node, g):
    c, h, w = node.inputs[0].shape
    return [apply("channel_expand", apply("div", g, const(float(h * w))), height=h, width=w)]


register(
    "global_avgpool",
    builtin=True,
    shape=_channel_reduce_shape,
    evaluate=lambda env, node, x: x.mean(axis=(-2, -1)),
    vjp=_global_avgpool_vjp,
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)
register(
    "channel_sum",
    shape=_channel_reduce_shape,
    evaluate=lambda env, node, x: x.sum(axis=(-2, -1)),
    vjp=lambda n, g: [
        apply("channel_expand", g, height=n.inputs[0].shape[1], width=n.inputs[0].shape[2])
    ],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _channel_expand_shape(shapes, *, height, width):
    (v,) = shapes
    if len(v) != 1:
        raise ShapeMismatch(f"channel_expand takes a vector [C], got rank {len(v)}")
    if height < 1 or width < 1:
        raise ShapeMismatch(f"the image size {height}x{width} must be positive")
    return (v[0], height, width)


def _channel_expand_eval(env, node, v):
    return np.broadcast_to(v[..., None, None], v.shape + tuple(node.shape[1:]))


register(
    "channel_expand",
    shape=_channel_expand_shape,
    evaluate=_channel_expand_eval,
    vjp=lambda n, g: [apply("channel_sum", g)],
    arity=1,
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


def _batch_mean_eval(env, node, x):
    return x.mean(axis=(len(env.axes), -2, -1), keepdims=True)[..., 0, 0]


def _batch_mean_vjp(node, g):
    (x,) = node.inputs
    c, h, w = x.shape
    count = const(float(h * w))
    if x.batched:
        count = apply("mul", count, apply("batch_size"))
    return [apply("channel_expand", apply("div", g, count), height=h, width=w)]


register(
    "batch_mean_per_channel",
    shape=_channel_reduce_shape,
    evaluate=_batch_mean_eval,
    vjp=_batch_mean_vjp,
    arity=1,
    context=lambda contexts: Context(contexts[0].axes, False),
    linear=True,
    linear_in=(0,),
    reads_in_place=True,
)


# ---- builders ------------------------------------------------------------------------------
def conv2d(x: Node, w: Node, stride=1, padding=0, dilation=1, **kwargs) -> Node:
    return apply("conv2d", x, w, stride=stride, padding=padding, dilation=dilation, **kwargs)


def maxpool2d(x: Node, kernel, stride=None, padding=0, **kwargs) -> Node:
    return apply("maxpool2d", x, kernel=kernel, stride=stride or kernel, padding=padding, **kwargs)


def avgpool2d(x: Node, kernel, stride=None, padding=0, **kwargs) -> Node:
    return apply("avgpool2d", x, kernel=kernel, stride=stride or kernel, padding=padding, **kwargs)


def channel_expand(v: Node, like: Node, **kwargs) -> Node:
    """v[C] broadcast over the height and width of the image `like` [C, H, W]."""
    return apply("channel_expand", v, height=like.shape[1], width=like.shape[2], **kwargs)


def add_channel_bias(x: Node, b: Node, **kwargs) -> Node:
    """x[C, H, W] + b[C] on every pixel: the bias of a convolution."""
    return apply("add", x, channel_expand(b, x), **kwargs)


@dataclass
class BatchNorm:
    """The normalised output and the statistics it used (batch ones when training).

    Expose `mean` and `var` as graph outputs when training so the training loop can update
    the running averages (docs/ops_conv.md)."""

    y: Node
    mean: Node
    var: Node


def batchnorm2d(
    x: Node,
    gamma: Node,
    beta: Node,
    eps: float = 1e-5,
    running_mean: Node | None = None,
    running_var: Node | None = None,
) -> BatchNorm:
    """gamma * (x - mean) / sqrt(var + eps) + beta, per channel of x[C, H, W].

    Training (no running statistics given): mean and var are the batch statistics over the
    batch, H and W, var the biased one (divided by B*H*W), as PyTorch normalises. Evaluation:
    pass the running averages (static [C] leaves, e.g. parameters the optimiser skips) and
    they are used instead; gradients then do not flow into the statistics.
    """
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    if running_mean is None:
        mean = apply("batch_mean_per_channel", x)
        centred = apply("sub", x, channel_expand(mean, x))
        var = apply("batch_mean_per_channel", apply("mul", centred, centred))
    else:
        mean, var = running_mean, running_var
        centred = apply("sub", x, channel_expand(mean, x))
    scale = apply("div", gamma, apply("sqrt", apply("add", var, const(eps))))
    y = apply("add", apply("mul", centred, channel_expand(scale, x)), channel_expand(beta, x))
    return BatchNorm(y, mean, var)


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    batch_mean: np.ndarray,
    batch_var: np.ndarray,
    count: int,
    momentum: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """The training loop's step after each training batch (PyTorch's rule): new running
    averages from the batch statistics of `batchnorm2d` (its `mean` and `var` outputs),
    where count = B*H*W elements per channel; the variance is made unbiased (count-1)."""
    unbiased = batch_var * (count / max(count - 1, 1))
    return (
        (1.0 - momentum) * running_mean + momentum * batch_mean,
        (1.0 - momentum) * running_var + momentum * unbiased,
    )


# Every op this module registers, for tests that enumerate ops by family.
OP_NAMES = (
    "conv2d",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "maxpool2d",
    "maxpool2d_grad",
    "maxpool2d_gather",
    "avgpool2d",
    "avgpool2d_grad",
    "global_avgpool",
    "channel_sum",
    "channel_expand",
    "batch_mean_per_channel",
)
