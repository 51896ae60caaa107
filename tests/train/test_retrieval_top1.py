"""retrieval_top1 (the pretraining validation's top-1) on hand-made embeddings."""

from __future__ import annotations

import numpy as np
import torch

from cmcgns_cli.train.retrieval import retrieval_top1


def test_top1_counts_hand_computed_hits_in_both_directions():
    # image i is closest to report perm[i]: images 0 and 1 hit, image 2 retrieves report 0
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0.0, 0.9], [0.0, 1.0, 0.0], [0.0, 0.0, 0.1]])
    txt = torch.nn.functional.normalize(txt, dim=-1)
    # i2t: img0 -> argmax(txt[:,0]) = report0 (1/sqrt(1.81)=.743 vs 0) hit;
    #      img1 -> report1 hit; img2 -> report2 (1.0) vs report0 (.669): hit -> 3/3
    # t2i: report0 = (.743, 0, .669) -> image0 hit; report1 -> image1 hit;
    #      report2 = (0, 0, 1) -> image2 hit -> 3/3
    assert retrieval_top1(img, txt) == (1.0, 1.0)
    txt2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # i2t: img2 scores 0 with all reports -> ties go to report 0: miss -> 2/3
    # t2i: report2 = e0 -> image0: miss -> 2/3
    i2t, t2i = retrieval_top1(img, txt2)
    assert np.isclose(i2t, 2 / 3) and np.isclose(t2i, 2 / 3)


def test_equal_report_keys_count_as_hits_and_chunks_do_not_change_the_result():
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # reports 0 and 2 are the same text (key 0): image 2 retrieving report 0 is a hit
    keys = np.array([0, 1, 0])
    assert retrieval_top1(img, txt, keys) == (1.0, 1.0)
    assert retrieval_top1(img, txt, keys, chunk=1) == (1.0, 1.0)
    assert np.isclose(retrieval_top1(img, txt, chunk=2)[0], 2 / 3)


def test_no_pairs_gives_nan():
    i2t, t2i = retrieval_top1(torch.zeros(0, 4), torch.zeros(0, 4))
    assert np.isnan(i2t) and np.isnan(t2i)
