"""KBC: boxes, crops, coordinate mapping and the plug-in wrapper around an arbitrary matcher."""

import numpy as np

from semcorr_ros.engine.kbc import (
    box_fraction,
    crop,
    from_crop,
    kbc_boxes,
    kbc_match,
    kbc_refine,
    keypoint_box,
    object_boxes,
    to_crop,
)


def test_keypoint_box_square_margin_and_shift_inside():
    box = keypoint_box(np.array([[100, 100], [140, 120]]), (640, 480), margin=0.25, min_side=8)
    assert box == (120 - 30, 110 - 30, 120 + 30, 110 + 30)  # side 40 * 1.5 = 60, centred
    box = keypoint_box(np.array([[2, 2], [12, 12]]), (640, 480), margin=0.5, min_side=8)
    assert box[0] == 0 and box[1] == 0 and box[2] == 20       # shifted inside, not shrunk
    assert keypoint_box(np.full((2, 2), np.nan), (640, 480)) is None


def test_crop_mapping_round_trip_and_padding():
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    box = (-2.0, 3.0, 6.0, 11.0)
    c = crop(img, box)
    assert c.shape == (8, 8, 3)
    assert (c[:, :2] == 0).all() and (c[0, 2] == img[3, 0]).all()
    xy = np.array([[4.0, 5.0]])
    assert np.allclose(from_crop(to_crop(xy, box), box), xy)
    assert (crop(img, box)[tuple(to_crop(xy, box)[0, ::-1].astype(int))] == img[5, 4]).all()
    assert abs(box_fraction((0, 0, 6, 5), (12, 10)) - 0.25) < 1e-12


def test_kbc_boxes_trigger_only_for_small_objects():
    src = np.array([[300, 200], [330, 230]], float)
    assert kbc_boxes(src, (640, 480), src, np.ones(2), (640, 480), 0.25, max_fraction=0.1) is not None
    big = np.array([[10, 10], [600, 450]], float)
    assert kbc_boxes(big, (640, 480), big, np.ones(2), (640, 480), 0.25, max_fraction=0.1) is None


def _dot_matcher(src_img, src_xy, tgt_img):
    """Stand-in for a coarse matcher: finds each keypoint's colour in the target, quantised to 1/32 of the
    target width (a low-resolution feature map), so it is accurate only when the object fills the input.
    A colour not in the target gives NaN with score 0."""
    q = tgt_img.shape[1] / 32.0
    out, score = [], []
    for x, y in np.round(src_xy).astype(int):
        ys, xs = np.nonzero(tgt_img[:, :, 0] == src_img[y, x, 0])
        out.append([xs[0], ys[0]] if len(xs) else [np.nan, np.nan])
        score.append(1.0 if len(xs) else 0.0)
    out = np.asarray(out, float)
    return (np.floor(out / q) + 0.5) * q, np.asarray(score)


def test_kbc_match_wraps_any_matcher_and_maps_back():
    src_xy = np.array([[300.0, 200.0], [320.0, 215.0], [310.0, 230.0]])
    offset = np.array([53.0, 41.0])
    src_img = np.zeros((480, 640, 3), np.uint8)
    tgt_img = np.zeros((480, 640, 3), np.uint8)
    for i, (p, q) in enumerate(zip(src_xy.astype(int), (src_xy + offset).astype(int))):
        src_img[p[1], p[0], 0] = tgt_img[q[1], q[0], 0] = 10 + i
    truth = src_xy + offset
    coarse, _ = _dot_matcher(src_img, src_xy, tgt_img)
    xy, score, cropped = kbc_match(_dot_matcher, src_img, src_xy, tgt_img, margin=0.25, max_fraction=0.5)
    assert cropped and score.shape == (3,)
    err_full, err_kbc = np.abs(coarse - truth).max(), np.abs(xy - truth).max()
    assert err_full > 5 and err_kbc < 0.5 * err_full
    # Large object: no crop, the first pass is returned unchanged.
    xy2, _, cropped2 = kbc_match(_dot_matcher, src_img, src_xy, tgt_img, margin=0.25, max_fraction=0.0)
    assert not cropped2 and np.array_equal(xy2, coarse)


def test_object_boxes_crop_around_a_small_given_box_only():
    src = np.array([[300, 200], [330, 230]], float)
    src_box, box = object_boxes(src, (640, 480), (100, 100, 140, 120), (640, 480), margin=0.25, max_fraction=0.1)
    assert src_box == keypoint_box(src, (640, 480), 0.25)
    assert box == keypoint_box(np.array([[100, 100], [140, 120]]), (640, 480), 0.25)
    assert object_boxes(src, (640, 480), (0, 0, 600, 450), (640, 480), 0.25, max_fraction=0.1) is None


def test_kbc_refine_maps_the_crop_pass_back_and_passes_its_payload():
    src = np.array([[300, 200], [330, 230]], float)
    seen = []

    def match_crops(src_box, tgt_box):
        seen.append((src_box, tgt_box))
        return to_crop(src + 7.0, tgt_box), "payload"

    xy, payload = kbc_refine(match_crops, src, (640, 480), src, np.ones(2), (640, 480), 0.25, max_fraction=0.1)
    assert payload == "payload" and np.allclose(xy, src + 7.0)
    assert seen[0] == kbc_boxes(src, (640, 480), src, np.ones(2), (640, 480), 0.25, max_fraction=0.1)
    assert kbc_refine(match_crops, src, (640, 480), src, np.ones(2), (640, 480), 0.25, max_fraction=0.0) is None
    _, _ = kbc_refine(match_crops, src, (640, 480), src, np.ones(2), (640, 480), 0.25, max_fraction=0.1,
                      object_box=(100, 100, 140, 120))
    assert seen[-1][1] == keypoint_box(np.array([[100, 100], [140, 120]]), (640, 480), 0.25)
