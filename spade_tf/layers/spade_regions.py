"""SPADE's layout branch computed once per class region instead of once per pixel.

The SPADE layer predicts gamma and beta from the layout with three 3x3 convolutions:
`mlp_shared` on the one-hot map, then `mlp_gamma` and `mlp_beta` on its ReLU. Two facts make
most of that arithmetic unnecessary, with the same result (up to the order of the sums):

- A 3x3 convolution of a one-hot map is a sum of 9 kernel rows, each chosen by the class at one
  tap (`shared_lookup`). Zero padding is a zero row: taps outside the image pick it.
- A pixel whose 5x5 window lies inside the image and holds one class (and no second hot channel,
  e.g. no instance edge) has the gamma and beta of its class: the convolutions see the same
  inputs everywhere in that window. Those are computed once per class (`region_modulation`).
  Only the other pixels (near a label boundary or the border) need the real convolution, run
  as one matrix product on their gathered 3x3 patches; everything is put in place by gathers.

Class ids come from the float semantic map (`layout_codes`): each pixel's first and second
channel equal to 1 (the label and, with instance maps, the edge channel), with the number of
channels as "none". A pixel whose values are not 0/1 with at most two ones is "not one-hot";
a layer that reads such a pixel runs the dense convolutions. So does a layer whose share of
boundary pixels is above `DENSE_ABOVE` (measured by `python -m bench`: there the gathers cost
more than the convolutions they save); the choice is made per layer, inside the graph.

Shapes are dynamic (the number of boundary pixels depends on the layout): the inference path
is for graphs without XLA (the export, `generate`, the servers). The training path
(`shared_lookup` followed by the dense gamma/beta convolutions) has static shapes only.
"""

from keras import ops

DENSE_ABOVE = 0.6  # boundary share above which a layer runs the dense convolutions
NOT_ONE_HOT = -1  # first code of a pixel that is not 0/1 with at most two ones
TAPS = [(dy, dx) for dy in range(3) for dx in range(3)]


def layout_codes(segmap):
    """[batch, H, W, C] float -> int32 [batch, H, W, 2]: first and second channel equal to 1.

    C means "none"; the first code is NOT_ONE_HOT where the pixel is not 0/1 with at most two
    ones. One matrix product gives the count, sum and sum of squares of the hot channels, from
    which the two channels follow exactly (integers below 2^24 are exact in float32).
    """
    seg = ops.cast(segmap, "float32")
    c = seg.shape[-1]
    index = ops.arange(c, dtype="float32")
    moments = ops.stack([ops.ones_like(index), index, index * index], axis=1)
    shape = ops.shape(seg)
    s = ops.reshape(ops.matmul(ops.reshape(seg, (-1, c)), moments), (shape[0], shape[1], shape[2], 3))
    count, total, squares = s[..., 0], s[..., 1], s[..., 2]
    gap = ops.sqrt(ops.maximum(2.0 * squares - total * total, 0.0))
    first = ops.where(count == 1, total, ops.where(count == 2, (total - gap) / 2, float(c)))
    second = ops.where(count == 2, (total + gap) / 2, float(c))
    binary = ops.all(ops.logical_or(ops.equal(seg, 0.0), ops.equal(seg, 1.0)), axis=-1)
    first = ops.where(ops.logical_and(binary, count <= 2), first, float(NOT_ONE_HOT))
    return ops.cast(ops.round(ops.stack([first, second], axis=-1)), "int32")


# --- helpers on [batch, h, w] maps ---------------------------------------------------------

def _pad(maps, value, margin=1):
    return ops.pad(maps, [[0, 0], [margin, margin], [margin, margin]], constant_values=value)


def _windows(padded, height, width):
    """The 9 shifted [batch, h, w] views of a map padded by 1, in tap order."""
    return [padded[:, dy:dy + height, dx:dx + width] for dy, dx in TAPS]


def _flat_maps(first, second, none):
    """(flat3, flat5): the 3x3 (5x5) window lies inside the image, one first code, no second code."""
    height, width = ops.shape(first)[1], ops.shape(first)[2]
    same = [ops.logical_and(ops.equal(f, first), ops.equal(s, none))
            for f, s in zip(_windows(_pad(first, -2), height, width), _windows(_pad(second, none), height, width))]
    flat3 = _all(same)
    flat5 = _all([ops.equal(v, 1) for v in _windows(_pad(ops.cast(flat3, "int32"), 0), height, width)])
    return flat3, flat5


def _all(maps):
    out = maps[0]
    for m in maps[1:]:
        out = ops.logical_and(out, m)
    return out


def _positions(mask):
    """Row-major flat indices of the True pixels of [batch, h, w], in the grid padded by 1
    (the top-left tap of each pixel's 3x3 window), and each pixel's rank among them."""
    shape = ops.shape(mask)
    height, width = shape[1], shape[2]
    flat = ops.reshape(mask, (-1,))
    index = ops.reshape(ops.nonzero(flat)[0], (-1,))
    index = ops.cast(index, "int32")
    b, y, x = index // (height * width), index // width % height, index % width
    padded = (b * (height + 2) + y) * (width + 2) + x
    rank = ops.reshape(ops.cumsum(ops.cast(flat, "int32")) - 1, shape)
    return padded, rank


def _kernel(conv):
    return ops.cast(conv.kernel, "float32")


# --- the two computations ----------------------------------------------------------------

def shared_lookup(conv, first, second, dtype):
    """relu(conv(one-hot)) for every pixel as 9 (18 with second codes) row lookups.

    Static shapes (usable under XLA and in training); the kernel's gradient is the lookups'
    scatter-add.
    """
    height, width = ops.shape(first)[1], ops.shape(first)[2]
    none = conv.kernel.shape[2]
    rows = ops.pad(_kernel(conv), [[0, 0], [0, 0], [0, 1], [0, 0]])  # [3, 3, C + 1, hidden], row C = 0

    def lookups(codes):
        windows = _windows(_pad(codes, none), height, width)
        return sum(ops.take(rows[dy, dx], w, axis=0) for (dy, dx), w in zip(TAPS, windows))

    pre = lookups(first)
    pre = ops.cond(ops.any(second < none), lambda: pre + lookups(second), lambda: pre)
    return ops.cast(ops.relu(pre + ops.cast(conv.bias, "float32")), dtype)


def region_modulation(shared, gamma_conv, beta_conv, first, second, flat3, flat5, dtype):
    """(gamma, beta) [batch, h, w, channels]: per class inside regions, convolved at boundaries."""
    width = ops.shape(first)[2]
    none = shared.kernel.shape[2]
    hidden = shared.kernel.shape[3]
    taps = ops.reshape(ops.pad(_kernel(shared), [[0, 0], [0, 0], [0, 1], [0, 0]]), (9 * (none + 1), hidden))
    summed = ops.sum(ops.reshape(taps, (9, none + 1, hidden)), axis=0)  # conv of a flat window
    bias = ops.cast(shared.bias, "float32")
    offsets = ops.stack([dy * (width + 2) + dx for dy, dx in TAPS])
    tap_rows = ops.arange(9, dtype="int32") * (none + 1)

    # mlp_shared at the pixels whose 3x3 window is not flat: 9 (+9) kernel rows each.
    mixed, mixed_rank = _positions(ops.logical_not(flat3))
    window = mixed[:, None] + offsets[None, :]
    codes = [ops.take(ops.reshape(_pad(c, none), (-1,)), window, axis=0) + tap_rows for c in (first, second)]
    mixed_pre = ops.sum(ops.take(taps, ops.concatenate(codes, axis=1), axis=0), axis=1)
    # rows: classes 0..C (flat windows), C + 1 = zero (outside the image), then the mixed pixels
    actv = ops.relu(ops.concatenate([summed + bias, ops.zeros((1, hidden)), mixed_pre + bias], axis=0))
    actv_index = _pad(ops.where(flat3, first, none + 2 + mixed_rank), none + 1)

    # mlp_gamma | mlp_beta: one matrix product on the boundary pixels' 3x3 patches ...
    channels = gamma_conv.kernel.shape[3]
    kernel = ops.concatenate([_kernel(gamma_conv), _kernel(beta_conv)], axis=3)  # [3, 3, hidden, 2 * channels]
    out_bias = ops.concatenate([ops.cast(gamma_conv.bias, "float32"), ops.cast(beta_conv.bias, "float32")], 0)
    boundary, boundary_rank = _positions(ops.logical_not(flat5))
    patch_index = ops.take(ops.reshape(actv_index, (-1,)), boundary[:, None] + offsets[None, :], axis=0)
    patches = ops.reshape(ops.take(ops.cast(actv, dtype), patch_index, axis=0), (-1, 9 * hidden))
    at_boundary = ops.matmul(patches, ops.cast(ops.reshape(kernel, (9 * hidden, 2 * channels)), dtype))
    at_boundary = at_boundary + ops.cast(out_bias, dtype)
    # ... and once per class inside regions.
    per_class = ops.matmul(actv[: none + 1], ops.sum(ops.reshape(kernel, (9, hidden, 2 * channels)), 0)) + out_bias
    table = ops.concatenate([ops.cast(per_class, dtype), at_boundary], axis=0)
    index = ops.where(flat5, first, none + 1 + boundary_rank)
    return ops.take(table[:, :channels], index, axis=0), ops.take(table[:, channels:], index, axis=0)


def boundary_maps(first, second, none):
    """(flat3, flat5, boundary share) of a layer's class maps."""
    flat3, flat5 = _flat_maps(first, second, none)
    share = 1.0 - ops.mean(ops.cast(flat5, "float32"))
    return flat3, flat5, share
