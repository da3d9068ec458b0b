"""Contract checks (objdecomp/types.py) and the base datamodule's sharding."""

import pytest
import torch

from datamodules.base import ShardedSampler
from objdecomp.types import ContractError, Decomposition, check_batch
from tests.tiny import TinySquaresDataModule


def make_decomposition(b=2, k=3, c=3, h=5, w=4) -> Decomposition:
    masks = torch.rand(b, k, h, w).softmax(1)
    return Decomposition(recon=torch.rand(b, c, h, w), masks=masks,
                         background=torch.tensor([True] + [False] * (k - 1)),
                         layers=torch.rand(b, k, c, h, w),
                         classes=torch.arange(k).repeat(b, 1), count=torch.full((b,), k - 1))


def test_valid_decomposition_passes_and_segments():
    dec = make_decomposition()
    assert dec.check(torch.rand(2, 3, 5, 4)) is dec
    assert dec.segmentation().shape == (2, 5, 4)
    assert torch.equal(dec.semantic_segmentation(), dec.segmentation())  # classes = arange(k)


@pytest.mark.parametrize("field,value,message", [
    ("recon", torch.rand(2, 3, 5, 5), "recon"),
    ("masks", torch.rand(2, 3, 5, 4), "sum to 1"),
    ("background", torch.tensor([1, 0, 0]), "background"),
    ("classes", torch.zeros(2, 3), "classes"),
    ("count", torch.zeros(3, dtype=torch.int64), "count"),
])
def test_broken_decomposition_names_the_field(field, value, message):
    dec = make_decomposition()
    setattr(dec, field, value)
    with pytest.raises(ContractError, match=message):
        dec.check(torch.rand(2, 3, 5, 4))


def test_batch_contract():
    good = {"image": torch.rand(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4, dtype=torch.int64),
            "count": torch.zeros(2, dtype=torch.int64)}
    check_batch(good)
    with pytest.raises(ContractError, match="unknown batch keys"):
        check_batch({**good, "masks": good["mask"]})
    with pytest.raises(ContractError, match="mask"):
        check_batch({**good, "mask": good["mask"].int()})


def test_eval_shards_cover_each_index_exactly_once():
    shards = [list(ShardedSampler(11, rank, 3)) for rank in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]  # uneven, never padded


def test_train_shards_are_even_disjoint_and_reshuffled_per_epoch():
    samplers = [ShardedSampler(11, rank, 2, shuffle=True, even=True, seed=5) for rank in range(2)]
    first = [list(s) for s in samplers]
    assert [len(s) for s in first] == [5, 5] and not set(first[0]) & set(first[1])
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != first
    replay = ShardedSampler(11, 0, 2, shuffle=True, even=True, seed=5)
    replay.set_epoch(1)
    assert list(replay) == list(samplers[0])  # the order of an epoch is a function of (seed, epoch)


def test_datamodule_batches_follow_the_contract():
    dm = TinySquaresDataModule(batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch)
    assert dm.facts == {"image_size": 16, "channels": 3, "max_objects": 3, "num_classes": 2,
                        "num_background": 1}
