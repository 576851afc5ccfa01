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
  as a matrix product on their gathered 3x3 patches; everything is put in place by gathers.
- More generally, a pixel's activation depends only on the codes in its 3x3 window and its gamma
  and beta only on those in its 5x5 window (outside the image counting as a code). Along a
  straight or periodic boundary most windows repeat, so each distinct window is computed once.
- At inference, batch norm (moving statistics) is folded into the gamma/beta tables, so x is
  modulated without a normalised copy.

What depends only on the layout (class codes, which pixels are boundaries, every gather index)
is computed once per resolution by `region_layout` and shared by the SPADE layers of a residual
block; each layer then does only the work that needs its weights.

Class ids come from the float semantic map (`layout_codes`): each pixel's first and second
channel equal to 1 (the label and, with instance maps, the edge channel), with the number of
channels as "none". A pixel whose values are not 0/1 with at most two ones is "not one-hot";
a layer that reads such a pixel runs the dense convolutions. So does a layer where the region
path would cost more than the dense one (`region_pays`, a cost model evaluated inside the graph
from the layer's channels, the number of classes and the number of boundary pixels).

Shapes are dynamic (the number of boundary pixels depends on the layout): the inference path
is for graphs without XLA (the export, `generate`, the servers). The training path
(`shared_lookup` followed by the dense gamma/beta convolutions) has static shapes only.
"""

from keras import ops

NOT_ONE_HOT = -1  # first code of a pixel that is not 0/1 with at most two ones
TAPS = [(dy, dx) for dy in range(3) for dx in range(3)]

# The cost model of `region_pays`, in units of the dense convolutions' time per multiply-add.
# Measured with `python -m bench.bench_regions --calibrate` (2026-12-03, Intel Xeon, 2 cores, fp32:
# one layer's two paths timed alternately at every resolution and width of the ADE20K and
# Cityscapes generators, on landscapes, Voronoi-30 and noise; the constants that lose the least time
# over the generators' layers against always picking the faster path: 5.6 ms, on one 16x16 layer).
MATMUL_COST = 0.9  # per multiply-add of the region path's matrix products (no im2col, no padding)
COPY_COST = 110.0  # per float the region path's lookups and gathers move (memory-bound ops)
FIXED_COST = -5.2e8  # per layer, region path minus dense: small convolutions carry more overhead
DISTINCT_SHARE = 0.9  # windows are searched for repeats only where at most this share of pixels needs them


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


def _all(maps):
    out = maps[0]
    for m in maps[1:]:
        out = ops.logical_and(out, m)
    return out


def _flat_maps(first, second, none):
    """(flat3, flat5): the 3x3 (5x5) window lies inside the image, one first code, no second code."""
    height, width = ops.shape(first)[1], ops.shape(first)[2]
    same = [ops.logical_and(ops.equal(f, first), ops.equal(s, none))
            for f, s in zip(_windows(_pad(first, -2), height, width), _windows(_pad(second, none), height, width))]
    flat3 = _all(same)
    flat5 = _all([ops.equal(v, 1) for v in _windows(_pad(ops.cast(flat3, "int32"), 0), height, width)])
    return flat3, flat5


def _positions(mask):
    """Row-major flat indices of the True pixels of [batch, h, w], and each pixel's rank among them."""
    flat = ops.reshape(mask, (-1,))
    index = ops.cast(ops.reshape(ops.nonzero(flat)[0], (-1,)), "int32")
    return index, ops.reshape(ops.cumsum(ops.cast(flat, "int32")) - 1, ops.shape(mask))


def _window(index, shape, margin):
    """[n, (2 margin + 1)^2] flat indices, in the map padded by `margin`, of the windows around pixels
    given by their row-major flat `index` in a [batch, h, w] map, in row-major tap order."""
    height, width = shape[1], shape[2]
    b, y, x = index // (height * width), index // width % height, index % width
    top_left = (b * (height + 2 * margin) + y) * (width + 2 * margin) + x
    span = range(2 * margin + 1)
    offsets = ops.stack([dy * (width + 2 * margin) + dx for dy in span for dx in span])
    return top_left[:, None] + offsets[None, :]


def _distinct(index, windows, pixels):
    """(first, inverse) over the windows of the pixels `index` (`windows(index)`: [n, k] int rows):
    where each distinct window first occurs, and each pixel's number among the distinct ones. Where
    the pixels are nearly all of a map's `pixels` (noise, small maps) few windows repeat, and the
    search is skipped: every window counts as distinct."""
    n = ops.shape(index)[0]

    def search():
        _, first, inverse = ops.unique(windows(index), sorted=False, return_index=True, return_inverse=True, axis=0)
        return ops.cast(first, "int32"), ops.cast(inverse, "int32")

    every = ops.arange(n, dtype="int32")
    return ops.cond(ops.cast(n, "float32") <= DISTINCT_SHARE * ops.cast(pixels, "float32"), search,
                    lambda: (every, every))


def _kernel(conv):
    return ops.cast(conv.kernel, "float32")


# --- what every SPADE layer of one resolution shares ------------------------------------------

def region_layout(segmap, static=False):
    """The layout's part of the region path for a semantic map at a layer's resolution.

    A dict of tensors: `first`, `second` (class codes [batch, h, w]) and `one_hot` (scalar);
    unless `static`, also the counts `pixels`, `mixed` and `boundary` (all pixels, those whose 3x3
    window is not flat, those whose 5x5 window is not), `lookups` and `patches` (the distinct 3x3
    windows of the mixed pixels, and the distinct 5x5 windows of the boundary pixels plus one per
    class of the others: the rows a layer computes), `mixed_rows` ([lookups, taps] rows of
    `mlp_shared`'s tap table), `patch_rows` ([patches * 9] rows of a layer's activation table: one
    patch per class, its class's row 9 times, then one per distinct boundary window) and `index`
    ([batch, h, w] rows of the gamma/beta table those patches give).

    Pixels whose windows hold the same codes (outside the image included) get the same activation
    (3x3) and the same gamma and beta (5x5), so each distinct window is computed once: along a
    straight or periodic boundary most windows repeat.
    """
    codes = layout_codes(segmap)
    first, second = codes[..., 0], codes[..., 1]
    layout = {"first": first, "second": second, "one_hot": ops.all(first != NOT_ONE_HOT)}
    if static:
        return layout
    none = segmap.shape[-1]
    shape = ops.shape(first)
    flat3, flat5 = _flat_maps(first, second, none)
    # one int per pixel for both codes; outside the image (the convolutions' zero padding) `none`
    key = (first + 2) * (none + 1) + second

    def windows(index, margin):
        return ops.take(ops.reshape(_pad(key, none, margin), (-1,)), _window(index, shape, margin), axis=0)

    # mlp_shared: one row of lookups per distinct 3x3 window of the mixed pixels
    mixed, mixed_rank = _positions(ops.logical_not(flat3))
    pixels = ops.size(first)
    mixed_first, mixed_number = _distinct(mixed, lambda index: windows(index, 1), pixels)
    taps = _window(ops.take(mixed, mixed_first, axis=0), shape, 1)
    tap_rows = ops.arange(9, dtype="int32") * (none + 1)

    def rows(codes):
        return ops.take(ops.reshape(_pad(codes, none), (-1,)), taps, axis=0) + tap_rows

    # Second codes (instance edges) add 9 lookups per window, only where a layout has them.
    mixed_rows = ops.cond(ops.any(second < none), lambda: ops.concatenate([rows(first), rows(second)], 1),
                          lambda: rows(first))
    # activation rows: classes 0..C (flat windows), C + 1 = zero (outside the image), then mixed windows
    mixed_row = none + 2 + ops.take(mixed_number, ops.maximum(mixed_rank, 0), axis=0)
    actv_index = ops.reshape(_pad(ops.where(flat3, first, mixed_row), none + 1), (-1,))

    # gamma and beta: one patch per class of the interior pixels, one per distinct 5x5 boundary window
    boundary, boundary_rank = _positions(ops.logical_not(flat5))
    boundary_first, boundary_number = _distinct(boundary, lambda index: windows(index, 2), pixels)
    interior_class = ops.reshape(ops.where(ops.logical_and(flat5, first >= 0), first, none + 1), (-1,))
    present = ops.bincount(interior_class, minlength=none + 2)[: none + 1] > 0
    classes = ops.cast(ops.reshape(ops.nonzero(present)[0], (-1,)), "int32")
    class_number = ops.cumsum(ops.cast(present, "int32")) - 1
    boundary_taps = _window(ops.take(boundary, boundary_first, axis=0), shape, 1)
    boundary_rows = ops.take(actv_index, ops.reshape(boundary_taps, (-1,)), axis=0)
    patch_rows = ops.concatenate([ops.repeat(classes, 9), boundary_rows], axis=0)
    index = ops.where(flat5, ops.take(class_number, ops.clip(first, 0, none), axis=0),
                      ops.shape(classes)[0] + ops.take(boundary_number, ops.maximum(boundary_rank, 0), axis=0))
    counts = {"pixels": pixels, "mixed": ops.shape(mixed)[0], "boundary": ops.shape(boundary)[0],
              "lookups": ops.shape(mixed_first)[0], "patches": ops.shape(classes)[0] + ops.shape(boundary_first)[0]}
    layout.update({k: ops.convert_to_tensor(v, "int32") for k, v in counts.items()})
    layout.update(mixed_rows=mixed_rows, patch_rows=patch_rows, index=index)
    return layout


def region_pays(layout, semantic_nc, hidden, channels):
    """Whether the region path costs less than the dense convolutions for this layer (a bool tensor).

    Dense: `mlp_shared` and `mlp_gamma`/`mlp_beta` at every pixel. Regions: the 3x3 convolution once
    per distinct boundary window and once per class (`MATMUL_COST` each), plus what its ops move (the
    lookups of the distinct mixed windows, the patches, gamma and beta at every pixel; `COPY_COST`
    each), plus `FIXED_COST`. Counts in float32: a layer's counts reach 10^10.
    """
    pixels, lookups, patches = (ops.cast(layout[k], "float32") for k in ("pixels", "lookups", "patches"))
    modulation = 2 * 9 * hidden * channels
    dense = pixels * (9 * semantic_nc * hidden + modulation)
    moved = ops.cast(ops.shape(layout["mixed_rows"])[1], "float32") * hidden * lookups
    moved = moved + 9 * hidden * patches + 2 * channels * pixels
    regions = MATMUL_COST * patches * modulation + COPY_COST * moved + FIXED_COST
    return regions < dense


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


def region_modulation(shared, gamma_conv, beta_conv, layout, dtype, affine=None):
    """(1 + gamma, beta) [batch, h, w, channels]: per class inside regions, convolved at boundaries.

    One matrix product per convolution gives its whole table: a patch per class (its flat
    activation at all 9 taps) and a patch per boundary pixel; gathers put the rows in place.
    With `affine` (a, b per channel: the norm is x * a + b), the norm is folded into the tables:
    ((1 + gamma) * a, beta + (1 + gamma) * b), which modulate x itself.
    """
    none, hidden = shared.kernel.shape[2], shared.kernel.shape[3]
    taps = ops.reshape(ops.pad(_kernel(shared), [[0, 0], [0, 0], [0, 1], [0, 0]]), (9 * (none + 1), hidden))
    flat = ops.sum(ops.reshape(taps, (9, none + 1, hidden)), axis=0)  # mlp_shared on a flat window
    mixed = ops.sum(ops.take(taps, layout["mixed_rows"], axis=0), axis=1)  # ... and on the others
    bias = ops.cast(shared.bias, "float32")
    # activation rows: classes 0..C (flat windows), C + 1 = zero (outside the image), then mixed pixels
    actv = ops.relu(ops.concatenate([flat + bias, ops.zeros((1, hidden)), mixed + bias], axis=0))
    patches = ops.reshape(ops.take(ops.cast(actv, dtype), layout["patch_rows"], axis=0), (-1, 9 * hidden))

    def table(conv, offset):
        kernel = ops.reshape(ops.cast(conv.kernel, dtype), (9 * hidden, -1))
        return ops.matmul(patches, kernel) + ops.cast(ops.cast(conv.bias, "float32") + offset, dtype)

    scale, beta = table(gamma_conv, 1.0), table(beta_conv, 0.0)
    if affine is not None:
        a, b = affine
        scale32 = ops.cast(scale, "float32")
        scale, beta = ops.cast(scale32 * a, dtype), ops.cast(ops.cast(beta, "float32") + scale32 * b, dtype)
    return ops.take(scale, layout["index"], axis=0), ops.take(beta, layout["index"], axis=0)
