"""AlignSeg's reported numbers, as data (Liu et al., TPAMI 2024, from the paper's text: PASCAL VOC 2012 (PVOC) and
COCO-Stuff-27, DINO ViT-S/16). Every table that shows them labels them as the paper's."""

PAPER_SOURCE = "paper (Liu et al. TPAMI 2024), as reported"

# Table I: method, encoder, frozen encoder, evaluation, mIoU (%) on PVOC and COCO-Stuff-27 (None: not reported).
# The DINOSAUR row's "frozen" mark is unreadable in our copy of the paper (None).
PAPER_TABLE_I = [
    ("IIC", "ResNet18", False, "Clustering", 9.8, 6.7),
    ("PiCIE+H", "ResNet18", False, "Clustering", None, 14.4),
    ("MaskContrast", "ResNet50", False, "Clustering", 35.0, 8.9),
    ("MaskDistill", "ResNet50", False, "End-to-End", 45.8, None),
    ("DINO", "ViT-S/16", False, "Clustering", 4.6, 9.6),
    ("DINO", "ViT-S/16", False, "Linear Probe", 50.6, 29.4),
    ("Leopart", "ViT-S/16", False, "Clustering", 41.7, None),
    ("STEGO", "ViT-S/16", True, "Clustering", None, 23.7),
    ("DINOSAUR", "ViT-B/16", None, "Clustering", 37.2, 24.0),
    ("ACSeg", "ViT-S/16", True, "Clustering", 47.1, 16.4),
    ("AlignSeg", "ViT-S/16", True, "End-to-End", 69.5, 35.1),
]

# Table II on PVOC val with DINO ViT-S/16 (mIoU %): (part, setting, mIoU). The baseline is L = 1, K = 5, v_l = 2,
# both losses, batch 32, 10 epochs (69.5).
PAPER_TABLE_II = {
    "a": {"L=1 K=5 v_l=2": 69.5, "L=3 K=5 v_l=2": 69.6, "L=1 K=5 v_l=1": 66.9, "L=1 K=5 v_l=3": 69.5,
          "L=1 K=10 v_l=2": 73.2, "L=1 K=15 v_l=2": 73.3},
    "b": {"L_corr + L_proto": 69.5, "L_corr only": 66.4, "L_proto only": 29.5},
    "c": {"batch 32, 10 epochs": 69.5, "batch 32, 50 epochs": 69.8, "batch 128, 10 epochs": 68.0},
    "d": {"train PVOC, eval PVOC": 69.5, "train PVOC, eval COCO": 32.5, "train COCO, eval PVOC": 70.7,
          "train COCO, eval COCO": 35.1},
}


__all__ = ["PAPER_SOURCE", "PAPER_TABLE_I", "PAPER_TABLE_II"]
