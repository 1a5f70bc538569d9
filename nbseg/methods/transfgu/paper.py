"""TransFGU's reported numbers, as data (Yin et al., ECCV 2022; DINO ViT-S/8 frozen, evaluated at 320 px, dataset-level
Hungarian). Every table that shows them labels them as the paper's; nbseg's numbers are never these."""

PAPER_SOURCE = "paper (Yin et al. 2022), as reported"
PAPER_SETTING = {"encoder": "DINO ViT-S/8", "protocol": "dataset-level Hungarian at 320x320"}
# Table 1 (mIoU %, pixel accuracy %).
PAPER_TABLE_1 = {"COCO-S-27": (16.19, 44.52), "COCO-S-27 (curated)": (17.47, 52.66), "COCO-S-171": (11.93, 34.32),
                 "COCO-80": (12.69, 64.31), "Cityscapes": (16.83, 77.92), "Pascal-VOC": (37.15, 83.59),
                 "LIP-5": (25.16, 65.76), "LIP-16": (15.49, 60.08), "LIP-19": (12.24, 42.52)}
# Table 3: the bootstrapping mechanism on MS-COCO (mIoU %): initial pseudo labels, trained once, bootstrapped.
PAPER_TABLE_3 = {"COCO-S-27": (8.95, 13.19, 16.19), "COCO-S-171": (5.05, 8.66, 11.93),
                 "COCO-80": (4.23, 8.28, 12.69)}
# Table 5: the losses on Pascal-VOC (mIoU %): CE; peer; peer + unc; peer + div; peer + unc + div.
PAPER_TABLE_5_VOC = {"ce": 34.24, "peer": 35.08, "peer+unc": 36.46, "peer+div": 35.97, "peer+unc+div": 37.15}
# Supplementary Table 1: over-clustering on Pascal-VOC, K -> (mIoU %, acc %).
PAPER_OVERCLUSTERING_VOC = {20: (37.15, 83.59), 22: (37.26, 84.12), 25: (37.68, 82.65), 30: (29.39, 80.85),
                            50: (27.42, 75.32)}

__all__ = ["PAPER_SOURCE", "PAPER_SETTING", "PAPER_TABLE_1", "PAPER_TABLE_3", "PAPER_TABLE_5_VOC",
           "PAPER_OVERCLUSTERING_VOC"]
