"""The float64 reference of a table, with a float32 error bound on every number it computes.

An independent interpreter of :mod:`common.net.spec` in PyTorch's functional ops, in float64
(composites walked generically, layers inside named flat; pool sizes, ceil mode and the
adaptive bins from the table's own definitions):
it computes what the four float32 backends should compute and, beside every value, the
size of the error a correct float32 computation of it makes.  The tests compare each
backend with the reference element by element against ``LAMBDA`` times that size, so every
tolerance of the cross-framework tests is derived, not picked (docs/fidelity.md, "Where
the tolerances come from").

The error model: probabilistic running error analysis, first order in the unit roundoff
``U`` (Higham & Mary, "A new approach to probabilistic rounding error analysis", SIAM J.
Sci. Comput. 41(5), 2019: rounding errors are independent, mean zero, at most ``U``
relative).  Every number carries ``sigma``, the standard deviation of its float32 error:

* an inner product of ``n`` terms (a conv or dense output, a gradient summed over
  positions, an average) adds its own rounding, ``sigma <= U sqrt((n + 1) / 3) sum |t|``
  whatever the summation order (each of the ``n`` partial sums and products is rounded
  once, with an error of standard deviation at most ``U / sqrt(3)`` of a value at most
  ``sum |t|``);
* errors of a layer's inputs travel through it linearly, as variances through the squared
  weights (``conv(sigma_x^2, W^2)``: the input errors are independent of each other);
  errors from different sources (inputs, weights, the layer's own rounding) add as standard
  deviations, which holds whatever their correlation;
* ReLU and max pooling pass errors through (the reference's masks and winners); batch
  norm, LRN, averages (an average pool divides by its window's cells, with or without the
  padded ones; adaptive pooling by its bin's), softmax and the loss by their derivatives;
* fixed per-channel transforms (Affine, ``downscale_in_infer`` dropout in evaluation, a
  residual block's scale) scale the error and add their own roundings: each float32
  constant and each operation at most ``U`` of what it rounds; a residual block's shortcut
  and body carry correlated errors, so their standard deviations add;
* backward, the error network (``W^2``, the same masks and winners) is linear, so its
  vector-Jacobian product carries the gradients' variances down the net, and each layer
  adds its own rounding of its input gradient (:class:`_Inject`); the weight gradient adds
  the errors of its two factors and its sum over positions; the optimiser adds standard
  deviations (a weight's error and its momentum's are correlated);
* a float32 result lies within ``LAMBDA * sigma`` of the float64 one: ``LAMBDA = 10``
  (a sub-Gaussian tail ``2 exp(-LAMBDA^2 / 2)`` is 4e-22 for one number; the suite
  compares fewer than 1e9).

This holds only where float32 makes every discrete decision as float64 does: each ReLU
input and each max-pool winner must be further than ``LAMBDA * sigma`` from its threshold.
:attr:`Reference.ties` counts the decisions that are not; a test of training steps asserts
it is zero (a *tie* makes a gradient differ by more than rounding, in a way no tolerance
describes).  Forward values are continuous in every such decision, so forward tests need
no such check.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from common.net import spec as S
from common.net.spec import BN_MOMENTUM, pair

U = 2.0 ** -24          # float32 unit roundoff
LAMBDA = 10.0
T = torch.float64


def rounding(n):
    """Standard deviation of an ``n``-term float32 sum's own rounding, per unit of ``sum |t|``
    (``n`` a number, or a tensor of counts: an average pool's cells per window)."""
    return U * ((n + 1) / 3) ** 0.5


class _Inject(torch.autograd.Function):
    """Identity forward; backward adds ``holder['src']`` (set after the forward, once the
    primal gradients are known) to the cotangent: a layer's own rounding of its input
    gradient, injected into the error network's backward pass."""

    @staticmethod
    def forward(ctx, x, holder):
        ctx.holder = holder
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        src = ctx.holder.get("src")
        return (g if src is None else g + src), None


def _linear_var(prop, total):
    """``total`` as a variance whose derivative in ``prop`` (the propagated, linear part)
    is 1: the error network stays linear for its backward pass."""
    return prop + (total - prop).detach()


def _pool_out(n, k, s, p, ceil):
    """Output length of a pooling window ``k``, stride ``s``, padding ``p`` on ``n`` cells:
    floor rounding, or PyTorch's ceil mode (rounded up, but the last window must start
    inside the input or its left padding)."""
    if not ceil:
        return (n + 2 * p - k) // s + 1
    out = -(-(n + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


def _bins(n, size):
    """The averaging matrix (size, n) of adaptive pooling: row ``i`` is ``1 / count`` on
    cells ``floor(i n / size)`` to ``ceil((i + 1) n / size) - 1``."""
    A = torch.zeros((size, n), dtype=T)
    for i in range(size):
        lo, hi = i * n // size, -(-(i + 1) * n // size)
        A[i, lo:hi] = 1.0 / (hi - lo)
    return A


def _np(t):
    return t.detach().numpy().copy()


class Reference:
    """``spec`` with float32 ``weights`` (a weight-file dict) in float64.

    ``forward(X)`` -> (logits, bound), with :meth:`outputs` giving any stage or block of
    that pass and :meth:`aux_outputs` the auxiliary heads on its taps; ``step(X, y, lr)``
    one optimiser step like the backends' ``Trainer.train_step``
    (``common.train.trainer.TrainerBase``'s options: PyTorch's SGD with momentum, nesterov
    and coupled weight_decay, Adam and AdamW; label_smoothing, clip_norm) -> (summed loss,
    bound); :meth:`weights` and :meth:`bounds` the current weights and their bounds.
    Training steps take every record but batch norm, dropout with a rate and residual
    blocks (``NotImplementedError``).  ``ties`` counts the ambiguous
    discrete decisions of the training steps so far (module docstring) and ``margin`` is
    the smallest distance of one from its threshold, in units of its bound.
    """

    def __init__(self, spec, weights, *, momentum=0.0, nesterov=False, weight_decay=0.0,
                 label_smoothing=0.0, clip_norm=None, optimizer="sgd"):
        self.spec = spec
        self.w = {k: torch.tensor(np.asarray(v), dtype=T) for k, v in weights.items()}
        self.sw = {k: torch.zeros_like(v) for k, v in self.w.items()}      # std of each weight's error
        self.buf, self.sbuf = {}, {}
        self.momentum, self.nesterov, self.wd = momentum, nesterov, weight_decay
        self.smoothing, self.clip, self.optimizer, self.t = label_smoothing, clip_norm, optimizer, 0
        self.tie_list, self.margin, self.flips, self.step_no = [], math.inf, set(), 0
        self.training, self.seen = False, {}

    # ------------------------------------------------------------------ layers
    def _decide(self, gap, sigma, live=None):
        """Discrete decisions at distance ``gap`` from their threshold, whose error has std
        ``sigma`` (``live``: the ones that matter).  Records the ambiguous ones as
        ``(step, site, index)`` in :attr:`tie_list`; returns the flat indices that
        :attr:`flips` asks to decide the other way at this site."""
        bound = LAMBDA * sigma.detach()
        gap = gap.detach()
        # (an exact zero with a zero bound is exact in float32 too: every framework's ReLU
        # and max pooling treat it alike)
        live = (bound > 0) if live is None else (live & (bound > 0))
        tied = ((gap <= bound) & live).flatten().nonzero().flatten().tolist()
        site, self.site = self.site, self.site + 1
        self.tie_list += [(self.step_no, site, i) for i in tied]
        if live.any():
            self.margin = min(self.margin, float((gap[live] / bound[live]).min()))
        return [i for (st, si, i) in self.flips if (st, si) == (self.step_no, site)]

    @property
    def ties(self):
        return len(self.tie_list)

    def _linear(self, name, layer, x, var, conv):
        W, b = self.w[name + ".weight"], self.w.get(name + ".bias")
        if self.training:
            W.requires_grad_(True)
            if b is not None:
                b.requires_grad_(True)
        Wd, ax = W.detach(), x.detach().abs()
        holder = {}
        var_in = _Inject.apply(var, holder) if self.training else var
        if conv:
            stride, padding = pair(layer.stride), pair(layer.padding)
            op = lambda a, w: F.conv2d(a, w, None, stride, padding)
            n, bshape = Wd[0].numel(), (1, -1, 1, 1)
        else:
            op = lambda a, w: a @ w.T
            n, bshape = Wd.shape[1], (1, -1)
        z = op(x, W) + (0 if b is None else b.view(bshape))
        own = rounding(n + 1) * (op(ax, Wd.abs()) + (0 if b is None else b.detach().abs().view(bshape)))
        wvar = op(ax * ax, self.sw[name + ".weight"] ** 2)
        if b is not None:
            wvar = wvar + (self.sw[name + ".bias"] ** 2).view(bshape)
        prop = op(var_in, Wd * Wd)
        var_z = _linear_var(prop, (prop.detach().sqrt() + wvar.sqrt() + own) ** 2)
        if self.training:
            z.retain_grad()
            var_z.retain_grad()
            self.layers.append(dict(name=name, layer=layer, conv=conv, x=x.detach(), var_x=var.detach(),
                                    z=z, var_z=var_z, holder=holder))
        return z, var_z

    def _bn(self, name, layer, z, var):
        """Batch norm after conv ``name`` with the layer's epsilon; without a scale
        (``scale=False``: the weight file has no ``.bn.weight``) gamma is 1."""
        beta = self.w[name + ".bn.bias"]
        g = self.w[name + ".bn.weight"] if layer.scale else torch.ones_like(beta)
        rm, rv = self.w[name + ".bn.running_mean"], self.w[name + ".bn.running_var"]
        shape, eps = (1, -1, 1, 1), layer.eps
        if not self.bn_train:
            s = (g / torch.sqrt(rv + eps)).view(shape)
            y = (z - rm.view(shape)) * s + beta.view(shape)
            # float32 computes z * s + (beta - rm * s): s takes at most three roundings (the sum
            # with eps, the root, the quotient), each product one more, the shift and the sum one
            # each; every rounding at most U of the value it rounds
            own = 4 * U * ((z.abs() + rm.abs().view(shape)) * s.abs() + beta.abs().view(shape) + y.abs())
            return y, (s.abs() * var.sqrt() + own) ** 2
        N = z.shape[0] * z.shape[2] * z.shape[3]
        mu = z.mean((0, 2, 3))
        d = z - mu.view(shape)
        v = (d * d).mean((0, 2, 3))
        s_mu = var.sum((0, 2, 3)).sqrt() / N + rounding(N) * z.abs().mean((0, 2, 3))
        # d(mean d^2)/dz = 2 d / N (the mean's own error drops out: sum d = 0)
        s_v = 2 * (d * d * var).sum((0, 2, 3)).sqrt() / N + rounding(N + 2) * v
        sd = torch.sqrt(v + eps)
        s_sd = s_v / (2 * sd) + U * sd
        y = g.view(shape) * d / sd.view(shape) + beta.view(shape)
        s_y = (g.abs() / sd).view(shape) * (var.sqrt() + s_mu.view(shape)) \
            + (g.abs() / sd ** 2 * s_sd).view(shape) * d.abs() + 5 * U * (y.abs() + beta.abs().view(shape))
        unb = N / (N - 1)     # every backend keeps the unbiased variance (docs/fidelity.md)
        self.stats_[name + ".bn.running_mean"] = ((1 - BN_MOMENTUM) * rm + BN_MOMENTUM * mu,
                                                  BN_MOMENTUM * s_mu + 3 * U * (rm.abs() + mu.abs()))
        self.stats_[name + ".bn.running_var"] = ((1 - BN_MOMENTUM) * rv + BN_MOMENTUM * unb * v,
                                                 BN_MOMENTUM * unb * s_v + 4 * U * (rv + unb * v))
        return y, s_y ** 2

    def _relu(self, z, var_z):
        """ReLU and its error: in evaluation, ``|relu(a) - relu(b)| <= |a - b|``, so near 0 a
        unit keeps its error; in a training step, the mask (each ambiguous unit a tie)."""
        if not self.training:
            keep = ((z > 0) | (z.abs() <= LAMBDA * var_z.sqrt())).to(T)
            return torch.relu(z), var_z * keep
        keep = (z.detach() > 0).to(T)
        flip = self._decide(z.abs(), var_z.sqrt())
        if flip:                   # the other side of 0 for these units (their gradient)
            k = keep.flatten()
            k[flip] = 1 - k[flip]
        return z * keep, var_z * keep

    def _act(self, act, z, var_z):
        return self._relu(z, var_z) if act == "relu" else (z, var_z)

    def _maxpool(self, layer, v, var):
        """Max pooling with a rectangular window, floor or ceil rounding: the input is padded
        with -inf (the padding, and in ceil mode the cells the last windows reach past the
        bottom and right edges, :func:`_pool_out`), so that no padded cell wins."""
        k, s, p = pair(layer.kernel), pair(layer.stride), pair(layer.padding)
        B, C, H, W = v.shape
        ceil = getattr(layer, "ceil", False)
        Ho, Wo = _pool_out(H, k[0], s[0], p[0], ceil), _pool_out(W, k[1], s[1], p[1], ceil)
        extra = [max(0, (o - 1) * st + kk - n - 2 * pp) for o, st, kk, n, pp in zip((Ho, Wo), s, k, (H, W), p)]
        pads = (p[1], p[1] + extra[1], p[0], p[0] + extra[0])
        vp = F.pad(v.detach(), pads, value=-math.inf)
        out, idx = F.max_pool2d(vp, k, s, return_indices=True)
        assert out.shape[2:] == (Ho, Wo), (out.shape, Ho, Wo)
        if not self.training:     # |max a - max b| <= max |a - b|
            return out, F.max_pool2d(F.pad(var, pads), k, s)
        # the winner must be clear of the runner-up: then the output's error is the winner's
        cols = F.unfold(vp, k, stride=s).view(B, C, k[0] * k[1], -1)
        vcols = F.unfold(F.pad(var.detach(), pads), k, stride=s).view(B, C, k[0] * k[1], -1)
        top, at = cols.topk(2, dim=2)
        sig = vcols.gather(2, at).sqrt()
        # all-zero windows: a ReLU zeroed every input, no gradient flows; equal winners:
        # copies of one unit (this pool reads a pool's output), the gradient reaches it
        # whichever copy wins
        live = (top[:, :, 0] > 0) & (top[:, :, 0] > top[:, :, 1])
        flip = self._decide(top[:, :, 0] - top[:, :, 1], sig[:, :, 0] + sig[:, :, 1], live)
        Wp = W + pads[0] + pads[1]
        idx = ((idx // Wp - p[0]) * W + idx % Wp - p[1]).flatten(2)    # into the unpadded map
        if flip:                  # route this window's gradient to its runner-up instead
            flat = idx.flatten()
            for i in flip:
                l, a = i % idx.shape[2], int(at[:, :, 1].flatten()[i])
                row, col = (l // Wo) * s[0] - p[0] + a // k[1], (l % Wo) * s[1] - p[1] + a % k[1]
                flat[i] = row * W + col
            idx = flat.view_as(idx)
        return v.flatten(2).gather(2, idx).view_as(out), var.flatten(2).gather(2, idx).view_as(out)

    def _lrn(self, layer, v, var):
        n, lo, hi = layer.size, layer.size // 2, (layer.size - 1) // 2
        window_sum = lambda t: n * F.avg_pool3d(F.pad(t.unsqueeze(1), (0, 0, 0, 0, lo, hi)), (n, 1, 1),
                                                stride=1).squeeze(1)
        y = F.local_response_norm(v, n, layer.alpha, layer.beta, layer.k)
        D = layer.k + layer.alpha / n * window_sum(v * v)
        # dy_i/dx_j = D_i^-b [i = j] - 2 a b / n x_i x_j D_i^(-b-1) over the window
        cross = 2 * layer.alpha * layer.beta / n * v.abs() * D ** (-layer.beta - 1) * window_sum(v * v * var).sqrt()
        return y, (D ** -layer.beta * var.sqrt() + cross + rounding(n + 8) * y.abs()) ** 2

    @staticmethod
    def _average(v, var, mean, n):
        """An average: ``mean(t)`` averages over each output's cells, ``n`` of them (a number,
        or a tensor of counts per output cell); input errors are independent, so the
        variance averages and is divided by ``n`` once more."""
        prop = mean(var) / n
        return mean(v), _linear_var(prop, (prop.detach().sqrt() + rounding(n + 1) * mean(v.detach().abs())) ** 2)

    def _avgpool(self, layer, v, var):
        """Average pooling; with ``count_pad`` the padded zeros count in the divisor (k*k
        everywhere), without it only the real cells of each window do."""
        k, s, p = pair(layer.kernel), pair(layer.stride), pair(layer.padding)
        count_pad = bool(layer.count_pad)
        mean = lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=count_pad)
        n = k[0] * k[1]
        if any(p) and not count_pad:   # the real cells of each window
            ones = torch.ones((1, 1) + tuple(v.shape[2:]), dtype=T)
            n = F.avg_pool2d(ones, k, s, p, count_include_pad=True) * n
        return self._average(v, var, mean, n)

    def _adaptive(self, layer, v, var):
        """Adaptive average pooling from the table's definition: output cell ``i`` averages
        input rows ``floor(i H / h)`` to ``ceil((i + 1) H / h) - 1`` (the bins may overlap)."""
        (h, w), (H, W) = pair(layer.size), v.shape[2:]
        Ah, Aw = _bins(H, h), _bins(W, w)
        mean = lambda t: torch.einsum("ih,bchw,jw->bcij", Ah, t, Aw)
        n = torch.outer((Ah > 0).sum(1), (Aw > 0).sum(1)).to(T)                # cells per bin
        return self._average(v, var, mean, n)

    def _globalmax(self, v, var):
        H, W = v.shape[2:]
        return self._maxpool(S.MaxPool((H, W), (H, W)), v, var)

    @staticmethod
    def _affine(layer, v, var):
        """``x * scale + shift`` per channel.  Four roundings, each at most U of what it
        rounds: the two constants to float32 (|x s|, |shift|), the product and the sum."""
        sc = torch.tensor(layer.scale, dtype=T).view(1, -1, 1, 1)
        sh = torch.tensor(layer.shift, dtype=T).view(1, -1, 1, 1)
        xs = v * sc
        y = xs + sh
        own = U * (2 * xs.detach().abs() + sh.abs() + y.detach().abs())
        prop = var * sc * sc
        return y, _linear_var(prop, (prop.detach().sqrt() + own) ** 2)

    def _dropout(self, name, layer, v, var):
        if self.training and layer.rate:
            raise NotImplementedError("dropout draws its own masks in every framework")
        if layer.mode != "downscale_in_infer" or self.training:
            return v, var
        # evaluation multiplies by 1 - rate: that constant in float32, and the product,
        # each a rounding of at most U of |y|
        keep = 1.0 - layer.rate
        y = v * keep
        return y, (keep * var.sqrt() + 2 * U * y.abs()) ** 2

    # Over the complexity limit on purpose: one branch per record kind of the table.
    def _primitive(self, name, layer, v, var):  # noqa: C901
        kind = layer.kind
        if kind in ("conv", "dense"):
            z, var_z = self._linear(name, layer, v, var, kind == "conv")
            if getattr(layer, "norm", None) == "bn":
                if self.training:
                    raise NotImplementedError("error bounds of batch-norm training steps")
                z, var_z = self._bn(name, layer, z, var_z)
            return self._act(layer.act, z, var_z)
        if kind == "maxpool":
            return self._maxpool(layer, v, var)
        if kind == "avgpool":
            return self._avgpool(layer, v, var)
        if kind == "adaptive_avg":
            return self._adaptive(layer, v, var)
        if kind == "gap":
            return self._average(v, var, lambda t: t.mean((2, 3), keepdim=True), v.shape[2] * v.shape[3])
        if kind == "gmp":
            return self._globalmax(v, var)
        if kind == "affine":
            return self._affine(layer, v, var)
        if kind == "flatten":
            return v.flatten(1), var.flatten(1)
        if kind == "dropout":
            return self._dropout(name, layer, v, var)
        if kind == "lrn":
            return self._lrn(layer, v, var)
        raise NotImplementedError(f"{name}: no reference for {kind!r}")

    def _residual(self, qname, c, v, var, bv, bvar):
        """``x + scale * body(x)``: the shortcut's and the body's errors are correlated (the
        body reads x), so their standard deviations add; the product (with the scale in
        float32) and the sum round at most U of |scale body| twice and of |y| once."""
        if self.training:
            raise NotImplementedError(f"{qname}: error bounds of residual blocks in training steps "
                                      f"(the shortcut's and the body's gradients meet)")
        sb = c.scale * bv
        y = v + sb
        return y, (var.sqrt() + abs(c.scale) * bvar.sqrt() + U * (2 * sb.abs() + y.abs())) ** 2

    def _block(self, qname, layer, v, var):
        """A layer of the table: a primitive, or a composite (Concat, Inception, Residual)
        whose sequences run on ``v`` (layers inside are named flat: ``<block>.<layer>``,
        :func:`common.net.spec.block_of`), then its activation."""
        c = S.composite(layer)
        if c is None:
            return self._primitive(qname, layer, v, var)
        block = S.block_of(qname)
        outs = []
        for seq in S.sequences(c):
            bv, bvar = v, var
            for name, sub in seq:
                bv, bvar = self._block(f"{block}.{name}", sub, bv, bvar)
            outs.append((bv, bvar))
        if c.kind == "residual":
            y, var_y = self._residual(qname, c, v, var, *outs[0])
        else:
            y, var_y = torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)
        return self._act(c.act, y, var_y)

    def _forward(self, X, training, bn_train=False):
        self.training, self.bn_train = training, bn_train
        self.layers, self.stats_, self.seen, self.site = [], {}, {}, 0
        v = torch.tensor(np.asarray(X), dtype=T)
        var = torch.zeros_like(v, requires_grad=training)
        for st in self.spec.stages:
            for name, layer in st.layers:
                q = f"{st.name}.{name}"
                v, var = self._block(q, layer, v, var)
                self.seen[q] = (v, var)
            self.seen[st.name] = (v, var)
        return v, var

    def forward(self, X, bn_train=False):
        """Evaluation-mode logits and their bound (``bn_train``: batch norm from the batch's
        statistics, as in a training step; :meth:`stats` then gives the running statistics
        that step leaves)."""
        with torch.no_grad():
            v, var = self._forward(X, False, bn_train)
        return _np(v), LAMBDA * _np(var.sqrt())

    def outputs(self, names):
        """(values, bounds) of stages / blocks of the last forward, as NumPy dicts."""
        return ({n: _np(self.seen[n][0]) for n in names},
                {n: LAMBDA * _np(self.seen[n][1].sqrt()) for n in names})

    def aux_outputs(self, names=None):
        """(values, bounds) of the auxiliary heads (``names``, default all) in evaluation mode
        on the last :meth:`forward`'s batch, as NumPy dicts keyed by head name: each head runs
        on its tapped block's output and bound (dropout as in evaluation: the identity, or
        ``1 - rate`` for ``downscale_in_infer``; batch norm as in that forward)."""
        if self.training or not self.seen:
            raise RuntimeError("aux_outputs() reads the taps of the last forward(): call forward(X) first")
        heads = [h for h in self.spec.aux if names is None or h.name in names]
        unknown = set(names or ()) - {h.name for h in heads}
        if unknown:
            raise KeyError(f"no auxiliary head {sorted(unknown)} in {self.spec.name!r}")
        vals, bounds = {}, {}
        with torch.no_grad():
            for h in heads:
                v, var = self.seen[h.tap]
                for name, layer in h.layers:
                    v, var = self._block(f"{h.name}.{name}", layer, v, var)
                vals[h.name], bounds[h.name] = _np(v), LAMBDA * _np(var.sqrt())
        return vals, bounds

    def stats(self):
        """(values, bounds) of the running statistics after a ``bn_train`` forward."""
        return ({k: _np(v) for k, (v, _) in self.stats_.items()},
                {k: LAMBDA * _np(s) for k, (_, s) in self.stats_.items()})

    # ------------------------------------------------------------------ training
    def _loss(self, z, var, y):
        B, C = z.shape
        q = torch.full_like(z, self.smoothing / C)
        q[torch.arange(B), torch.as_tensor(np.asarray(y))] += 1 - self.smoothing
        loss = -(q * torch.log_softmax(z, 1)).sum(1).mean()
        zd, var = z.detach(), var.detach()
        p = torch.softmax(zd, 1)
        own = rounding(2 * C + 2)
        # d(-sum q log p)/dz = p - q; the examples' errors may correlate: their stds add
        s_loss = ((((p - q) ** 2) * var).sum(1).sqrt()
                  + own * (torch.logsumexp(zd, 1).abs() + zd.abs().max(1).values)).sum()
        # delta = (p - q) / B; softmax's Jacobian dp_i/dz_j = p_i ([i = j] - p_j)
        var_p = p ** 2 * (var * (1 - 2 * p) + (p * p * var).sum(1, keepdim=True))
        var_delta = ((var_p.clamp_min(0).sqrt() + own * (p + q)) / B) ** 2
        return loss, s_loss, var_delta

    def summed_loss(self, X, y, bn_train=False):
        """The summed loss of one forward pass (no step) and its bound."""
        with torch.no_grad():
            z, var = self._forward(X, False, bn_train)
            loss, s_loss, _ = self._loss(z, var, y)
        return float(loss) * len(y), LAMBDA * float(s_loss)

    def step(self, X, y, lr):
        """One optimiser step on float32 batch ``X`` (N, C, H, W), labels ``y``; returns the
        summed loss over the batch (``train_step``'s first number) and its bound."""
        for t in self.w.values():
            t.grad = None
        z, var = self._forward(X, True)
        loss, s_loss, var_delta = self._loss(z, var, y)
        loss.backward()
        for L in self.layers:          # each layer's rounding of its input gradient
            W, sW = self.w[L["name"] + ".weight"].detach(), self.sw[L["name"] + ".weight"]
            d = L["z"].grad
            if L["conv"]:
                lay = L["layer"]
                back = lambda g, w, x=L["x"], lay=lay: conv2d_input(x.shape, w, g, pair(lay.stride),
                                                                    pair(lay.padding))
                n = W.shape[0] * W.shape[2] * W.shape[3]
            else:
                back, n = (lambda g, w: g @ w), W.shape[0]
            L["holder"]["src"] = (rounding(n) * back(d.abs(), W.abs()) + back(d * d, sW * sW).sqrt()) ** 2
        var.backward(var_delta)
        grads, sgrads = {}, {}
        for L in self.layers:
            name, x, var_x, d, var_d = L["name"], L["x"], L["var_x"], L["z"].grad, L["var_z"].grad
            W = self.w[name + ".weight"]
            if L["conv"]:
                lay = L["layer"]
                gw = lambda a, g, W=W, lay=lay: conv2d_weight(a, W.shape, g, pair(lay.stride), pair(lay.padding))
                n, bsum = d.shape[0] * d.shape[2] * d.shape[3], (lambda g: g.sum((0, 2, 3)))
            else:
                gw, n, bsum = (lambda a, g: g.T @ a), d.shape[0], (lambda g: g.sum(0))
            grads[name + ".weight"] = W.grad.detach().clone()
            sgrads[name + ".weight"] = (gw(x * x, var_d).sqrt() + gw(var_x, d * d).sqrt()
                                        + rounding(n) * gw(x.abs(), d.abs()))
            if name + ".bias" in self.w:
                grads[name + ".bias"] = self.w[name + ".bias"].grad.detach().clone()
                sgrads[name + ".bias"] = bsum(var_d).sqrt() + rounding(n) * bsum(d.abs())
        self._update(grads, sgrads, lr)
        self.step_no += 1
        return float(loss.detach()) * len(y), LAMBDA * float(s_loss)

    def _update(self, g, sg, lr):
        """PyTorch's SGD (coupled weight decay, momentum, Nesterov) or Adam / AdamW after
        global-norm clipping; each stored result adds its rounding (std at most ``U`` of it)."""
        if self.clip:
            norm = math.sqrt(sum(float((t * t).sum()) for t in g.values()))
            s_norm = sum(float((t.abs() * s).sum()) for t, s in zip(g.values(), sg.values())) / norm \
                + rounding(sum(t.numel() for t in g.values())) * norm
            coef = self.clip / (norm + 1e-6)
            if coef < 1:
                s_coef = self.clip * s_norm / (norm + 1e-6) ** 2 + 2 * U * coef
                sg = {k: coef * sg[k] + (s_coef + U * coef) * g[k].abs() for k in g}
                g = {k: coef * g[k] for k in g}
        if self.optimizer != "sgd":
            return self._adam(g, sg, lr)
        for k in g:
            w, sw = self.w[k].detach(), self.sw[k]
            d = g[k] + self.wd * w
            sd = sg[k] + self.wd * sw + 2 * U * (d.abs() + self.wd * w.abs())
            if self.momentum:
                if k in self.buf:
                    self.buf[k] = self.momentum * self.buf[k] + d
                    self.sbuf[k] = self.momentum * self.sbuf[k] + sd + 2 * U * self.buf[k].abs()
                else:
                    self.buf[k], self.sbuf[k] = d.clone(), sd.clone()
                if self.nesterov:
                    sd = sd + self.momentum * self.sbuf[k] + 2 * U * (d + self.momentum * self.buf[k]).abs()
                    d = d + self.momentum * self.buf[k]
                else:
                    d, sd = self.buf[k], self.sbuf[k]
            new = w - lr * d
            self.w[k] = new
            self.sw[k] = sw + lr * sd + 2 * U * (new.abs() + lr * d.abs())

    def _adam(self, g, sg, lr, b1=0.9, b2=0.999, eps=1e-8):
        """PyTorch's Adam (epsilon added to the bias-corrected sqrt(v)); AdamW decays first."""
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, math.sqrt(1 - b2 ** self.t)
        for k in g:
            w, sw, gk, sgk = self.w[k].detach(), self.sw[k], g[k], sg[k]
            if self.optimizer == "adamw":
                w, sw = w * (1 - lr * self.wd), sw * (1 - lr * self.wd) + U * w.abs()
            else:
                gk, sgk = gk + self.wd * w, sgk + self.wd * sw + 2 * U * (gk.abs() + self.wd * w.abs())
            m, v = self.buf.get(k, torch.zeros_like(w)), self.sbuf.get(k, torch.zeros_like(w))
            sm, sv = self.buf.get(k + ":s", torch.zeros_like(w)), self.sbuf.get(k + ":s", torch.zeros_like(w))
            m, sm = b1 * m + (1 - b1) * gk, b1 * sm + (1 - b1) * sgk + 2 * U * m.abs()
            v, sv = b2 * v + (1 - b2) * gk * gk, b2 * sv + (1 - b2) * 2 * gk.abs() * sgk + 3 * U * v
            self.buf[k], self.sbuf[k], self.buf[k + ":s"], self.sbuf[k + ":s"] = m, v, sm, sv
            root = v.sqrt()
            # |sqrt(v + e) - sqrt(v)| <= min(e / (2 sqrt v), sqrt e)
            s_root = torch.minimum(sv / (2 * root).clamp_min(1e-300), sv.sqrt())
            den = root / c2 + eps
            s_den = s_root / c2 + 2 * U * den
            upd = lr / c1 * m / den
            s_upd = lr / c1 * (sm / den + m.abs() * s_den / den ** 2) + 3 * U * upd.abs()
            new = w - upd
            self.w[k], self.sw[k] = new, sw + s_upd + U * new.abs()

    def weights(self):
        return {k: _np(v) for k, v in self.w.items()}

    def bounds(self):
        return {k: LAMBDA * _np(v) for k, v in self.sw.items()}


def check(got, want, bound, what=""):
    """Assert ``|got - want| <= bound`` element-wise; the message names the worst element
    and how far past its bound it is.  Returns the largest ratio ``|got - want| / bound``."""
    got, want, bound = (np.asarray(a, np.float64) for a in (got, want, bound))
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    ratio = np.where(err == 0, 0.0, err / np.maximum(bound, 1e-300))
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape) if ratio.ndim else ()
    assert ratio[worst] <= 1, (f"{what}: |diff| {err[worst]:.3e} > bound {bound[worst]:.3e} "
                               f"at {worst} (got {got[worst]:.7e}, float64 {want[worst]:.7e}); "
                               f"{int((ratio > 1).sum())} of {ratio.size} elements past their bound")
    return float(ratio.max()) if ratio.size else 0.0


class Steps:
    """Training steps of the reference and the bound a float32 backend must meet.

    ``Steps(spec, weights, batches, lrs, **opt)`` runs ``Reference.step`` on each batch
    ``(X, y)`` with the learning rates ``lrs``.  Every ambiguous decision (a ReLU input or a
    max-pool winner within its bound of the threshold, :meth:`Reference._decide`) may go
    either way in float32, and each backend's summation order decides which: the run is
    repeated with that one decision taken the other way, and the absolute change of every
    weight and loss is added to its bound (the changes are small, so they superpose; a
    backend that hits several ties at once stays within the sum).  ``losses``,
    ``loss_bounds``, ``weights``, ``bounds``: the reference and the full bounds;
    ``tie_part``: the share of the bounds that the ties contribute; ``ties``: their list.
    """

    def __init__(self, spec, weights, batches, lrs, **opt):
        def run(flips):
            ref = Reference(spec, weights, **opt)
            ref.flips = flips
            losses, bounds, history = [], [], []
            for (X, y), lr in zip(batches, lrs):
                loss, bound = ref.step(X, y, lr)
                losses.append(loss)
                bounds.append(bound)
                history.append((ref.weights(), ref.bounds()))
            return ref, np.array(losses), np.array(bounds), history

        ref, self.losses, self.loss_bounds, history = run(set())
        self.ties, self.margin = list(ref.tie_list), ref.margin
        tie_parts = [{k: np.zeros_like(v) for k, v in w.items()} for w, _ in history]
        self.loss_tie_part = np.zeros_like(self.losses)
        for tie in self.ties:
            _, losses, _, alt = run({tie})
            for part, (w, _), (a, _) in zip(tie_parts, history, alt):
                for k in w:
                    part[k] += np.abs(a[k] - w[k])
            self.loss_tie_part += np.abs(losses - self.losses)
        self.loss_bounds = self.loss_bounds + self.loss_tie_part
        #: after each step: (weights, bounds)
        self.history = [(w, {k: b[k] + part[k] for k in w}) for (w, b), part in zip(history, tie_parts)]
        self.weights, self.bounds = self.history[-1]
        self.tie_part = tie_parts[-1]
