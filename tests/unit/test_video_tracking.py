"""hmr_jax.video.tracking: synthetic box sequences through the tracker."""
from __future__ import annotations

import numpy as np
import pytest

from hmr_jax.video import Tracker, link_tracks


def box(cx, cy, w=40, h=100):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ids_of(ids_per_frame):
    return [list(map(int, i)) for i in ids_per_frame]


@pytest.mark.parametrize("same_size", [True, False])
def test_two_people_crossing_keep_their_ids(same_size):
    # A walks right, B walks left at the same height; their boxes coincide mid-way (frame 10)
    frames = []
    for t in range(21):
        a = box(50 + 10 * t, 200)
        b = box(250 - 10 * t, 200) if same_size else box(250 - 10 * t, 190, 32, 80)  # B farther away
        frames.append(np.array([b, a] if t % 2 else [a, b]))                        # detector order varies
    ids, tracks = link_tracks(frames)
    assert len(tracks) == 2
    for t, (f, i) in enumerate(zip(frames, ids)):
        a_row = int(np.argmin(np.abs((f[:, 0] + f[:, 2]) / 2 - (50 + 10 * t))))
        if t != 10 or not same_size:                                # at t = 10 A and B are the same box
            assert i[a_row] == 0 and i[1 - a_row] == 1, (t, i)
    np.testing.assert_allclose(tracks[0].arrays()["boxes"][-1], box(250, 200))
    assert tracks[0].arrays()["frames"].tolist() == list(range(21))


def test_occluded_person_keeps_id_new_person_gets_new_id():
    seq, frames = [], []
    for t in range(30):
        boxes = [box(100 + 3 * t, 200)]                             # person 0 walks right throughout
        if not 10 <= t < 15:                                        # person 1 hidden for 5 frames
            boxes.append(box(400 - 2 * t, 210))
        if t >= 20:
            boxes.append(box(600, 200))                             # person 2 enters at frame 20
        seq.append(np.array(boxes))
        frames.append(2 * t)                                        # every second video frame
    ids, tracks = link_tracks(seq, frames, max_age=8)
    assert ids_of(ids[:10]) == [[0, 1]] * 10
    assert ids_of(ids[10:15]) == [[0]] * 5
    assert ids_of(ids[15:20]) == [[0, 1]] * 5
    assert ids_of(ids[20:]) == [[0, 1, 2]] * 10
    assert tracks[1].frames == [2 * t for t in range(30) if not 10 <= t < 15]
    # the same gap with a shorter life time ends the track: the person comes back as a new id
    ids, tracks = link_tracks(seq, frames, max_age=3)
    assert ids_of(ids[15:20]) == [[0, 2]] * 5 and ids_of(ids[20:]) == [[0, 2, 3]] * 10
    assert sorted(tracks) == [0, 1, 2, 3] and len(tracks[1]) == 10


def test_centre_distance_fallback_and_empty_frames():
    seq = [np.array([box(100, 200)]), np.zeros((0, 4)), np.array([box(150, 200)])]   # no overlap after the jump
    ids, _ = link_tracks(seq)
    assert ids_of(ids) == [[0], [], [0]]                            # 50 px < one box diagonal (108 px)
    ids, _ = link_tracks(seq, max_center_distance=0.3)
    assert ids_of(ids) == [[0], [], [1]]
    ids, _ = link_tracks(seq, max_center_distance=0.0)
    assert ids_of(ids) == [[0], [], [1]]


def test_new_tracks_in_score_order_and_checks():
    tr = Tracker()
    ids = tr.update(np.array([box(100, 100), box(300, 100), box(500, 100)]), scores=np.array([0.6, 0.9, 0.7]))
    assert ids.tolist() == [2, 0, 1]
    assert tr.update(np.array([box(500, 100), box(101, 100)]), frame=7).tolist() == [1, 2]
    assert tr.tracks[2].frames == [0, 7] and tr.tracks[0].misses == 1
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        tr.update(np.array([box(1, 1), box(2, 2)]), scores=np.array([1.0]))
    with pytest.raises(ValueError):
        Tracker(velocity_smoothing=1.0)
