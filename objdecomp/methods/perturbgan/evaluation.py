"""Stage one's evaluation on generated scenes (§4): Table 1's mIoU of the generated masks
against Mask R-CNN's, and Table 3's FID of the composites against real images.

Both need weights this suite cannot ship: Mask R-CNN (ResNet-50 FPN) pre-trained on MS-COCO,
as the paper ran it (torchvision's ``maskrcnn_resnet50_fpn`` COCO weights), and the Inception
network of the standard FID (torch-fidelity's port of the TensorFlow graph, through
torchmetrics). Each is fetched into torch's cache the first time, or read from a file given as
``detector_weights`` / ``inception_weights``; a machine that can do neither gets an error naming
the file and where it comes from.

Protocol (§4, "Ablation study" and "Quality of generated images"), and our readings where the
text is silent:

- composites and masks are the EMA generator's at its last resolution, from fresh codes, with
  neither shift nor style mixing (the perturbations are training devices); masks binarise at 0.5;
- 64×64 composites are resized to 128×128 for Mask R-CNN (the paper), and the IoU is taken at
  that size (the generated mask resized bilinearly, then binarised: our reading);
- "the car is detected": a detection of the category with score ≥ 0.5 (our threshold: the paper
  gives none); its mask is the highest-scoring such detection's, binarised at 0.5; the mIoU is
  the mean IoU over the images with a detection, and the share of those images is reported;
- FID: as many generated composites as real test images (the paper: 10k and 10k).

Table 2's LSUN Car columns score real images against Mask R-CNN's masks of them, made once::

    python -m objdecomp.methods.perturbgan.evaluation annotate --category car --images 10000

which stores them beside the database (``<root>/car_maskrcnn/``, datamodules/lsun.py) for the
``pseudo_masks`` option of the LSUN datamodule: the best detection's mask at 128×128 as above,
an empty mask where none was found.
"""

from __future__ import annotations

import argparse
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

DETECTOR_INPUT = 128  # §4: 64x64 composites are resized to 128x128 for Mask R-CNN
DETECTION_SCORE = 0.5  # our threshold for "detected"


def coco_category(name: str) -> int:
    """The index of a COCO category in torchvision's detection models (e.g. car: 3)."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    categories = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    if name not in categories:
        raise ValueError(f"'{name}' is not a COCO category; e.g. car, horse, bird, chair")
    return categories.index(name)


def coco_mask_rcnn(weights: Optional[str] = None) -> nn.Module:
    """Mask R-CNN with a ResNet-50 FPN trained on MS-COCO, in eval mode: torchvision's weights,
    from ``weights`` (a file) or fetched into torch's cache."""
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn

    coco = MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                  num_classes=len(coco.meta["categories"]))
    try:
        state = torch.load(weights, map_location="cpu") if weights else coco.get_state_dict(progress=False)
    except Exception as error:  # noqa: BLE001 - offline, missing file, corrupt file: one message
        raise RuntimeError(
            f"Mask R-CNN's COCO weights could not be read ({error}). Download {coco.url} and give "
            "its path as --model.init_args.detector_weights") from error
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def best_detection(found: Dict[str, Tensor], category: int,
                   score_threshold: float = DETECTION_SCORE) -> Optional[Tensor]:
    """The mask (binarised at 0.5) of a detector's highest-scoring detection of ``category``
    with a score of at least ``score_threshold``; None when there is none."""
    scores = found["scores"].masked_fill(found["labels"] != category, -1.0)
    if not len(scores) or scores.max() < score_threshold:
        return None
    return found["masks"][scores.argmax(), 0] >= 0.5


class DetectedMaskIoU(Metric):
    """Table 1: the mean IoU of generated object masks against the mask a detector finds in the
    same composite (over the composites where it detects the category), and the share of
    composites where it does. The state is sums and counts, so that DDP gives the single-process
    value.

    Args:
        detector: a torchvision detection model (a list of ``[3, H, W]`` images in [0, 1] ->
            a list of dicts with ``labels``, ``scores``, ``masks`` ``[N, 1, H, W]``).
        category: the COCO category index of the object (car: 3).
    """

    full_state_update = False

    def __init__(self, detector: Callable[[List[Tensor]], List[Dict[str, Tensor]]], category: int,
                 input_size: int = DETECTOR_INPUT, score_threshold: float = DETECTION_SCORE, **kwargs):
        super().__init__(**kwargs)
        self.detector, self.category = detector, category
        self.input_size, self.score_threshold = input_size, score_threshold
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("detected", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, composites: Tensor, masks: Tensor) -> None:
        """``composites`` ``[B, 3, H, W]`` in [0, 1] and their generated masks ``[B, 1, H, W]``."""
        size = max(self.input_size, composites.shape[-1])
        composites = F.interpolate(composites.float(), size=size, mode="bilinear", align_corners=False)
        generated = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)[:, 0] >= 0.5
        for found, mask in zip(self.detector(list(composites.clamp(0, 1))), generated):
            self.images += 1
            reference = best_detection(found, self.category, self.score_threshold)
            if reference is None:
                continue
            self.detected += 1
            union = (reference | mask).sum()
            self.iou_sum += ((reference & mask).sum() / union).double() if union else 1.0

    def compute(self) -> Dict[str, Tensor]:
        return {"miou": self.iou_sum / self.detected.clamp(min=1),
                "detected": self.detected / self.images.clamp(min=1).double()}


def frechet_inception_distance(weights: Optional[str] = None) -> Metric:
    """The standard FID (2048-d pool features of the TensorFlow Inception, torchmetrics with
    torch-fidelity) of images in [0, 1]; its weights from ``weights`` or fetched once."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        return FrechetInceptionDistance(feature=2048, normalize=True,
                                        feature_extractor_weights_path=weights)
    except Exception as error:  # noqa: BLE001 - offline, missing package, missing file: one message
        raise RuntimeError(
            f"FID's Inception weights could not be read ({error}). They are torch-fidelity's "
            "pt_inception-2015-12-05 (github.com/toshas/torch-fidelity releases); give the file as "
            "--model.init_args.inception_weights") from error


# --- Table 2: Mask R-CNN's masks of the real images ---------------------------------------------
@torch.no_grad()
def annotate(category: str, root: Optional[str], images: int, detector: Callable, batch_size: int = 8,
             size: int = DETECTOR_INPUT, log: Callable[[str], None] = print) -> Dict[str, float]:
    """Runs ``detector`` on the first ``images`` images of an LSUN category (squashed to ``size``,
    as the datamodule reads them) and stores its masks beside the database."""
    from datamodules.lsun import LSUNDataModule, pseudo_mask_folder, save_pseudo_masks

    data = LSUNDataModule(category, root=root, image_size=size, max_images=images, eval_images=images)
    dataset = data.make_dataset("test")
    index = coco_category(category)
    masks = np.zeros((len(dataset), size, size), dtype=bool)
    detected = np.zeros(len(dataset), dtype=bool)
    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i]["image"] for i in range(start, min(start + batch_size, len(dataset)))]
        for offset, found in enumerate(detector(batch)):
            mask = best_detection(found, index)
            if mask is not None:
                masks[start + offset], detected[start + offset] = mask.cpu().numpy(), True
        log(f"annotated {min(start + batch_size, len(dataset))}/{len(dataset)} images")
    folder = pseudo_mask_folder(data.root, category)
    save_pseudo_masks(folder, [key for _, key in data.records()[:len(dataset)]], masks, detected)
    log(f"{int(detected.sum())} of {len(dataset)} images with a detected {category}: {folder}")
    return {"images": len(dataset), "detected": int(detected.sum())}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="PerturbGAN's Table 2 ground truth: Mask R-CNN's "
                                                 "masks of the first images of an LSUN category")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("annotate", help="store Mask R-CNN's masks beside the database")
    command.add_argument("--category", default="car")
    command.add_argument("--root", default=None, help="LSUN root (default <data root>/lsun)")
    command.add_argument("--images", type=int, default=10_000, help="the first images (10k in §4)")
    command.add_argument("--detector-weights", default=None, help="Mask R-CNN's COCO weights file")
    command.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    annotate(args.category, args.root, args.images, coco_mask_rcnn(args.detector_weights), args.batch_size)


if __name__ == "__main__":
    main()
