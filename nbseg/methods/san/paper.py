"""SAN's reported numbers, as data (Zhang et al., AAAI 2023, Tables 2-5; pixel accuracy %, Hungarian matching over
the validation set). Every table that shows them labels them as the paper's. Their setting: SAN trained from scratch
(no pretrained model) on the IIC splits, 128-px crops, P = 1024, a 6-block ViT with patch 8, 30 epochs on 4 V100s.
"""

PAPER_SOURCE = "paper (Zhang et al. 2023, AAAI), as reported"
PAPER_SETTING = "SAN trained from scratch, 128-px crops, P=1024, ViT-6/8, 30 epochs; pixel accuracy %"

# Table 2: unpretrained methods; COCO-Stuff-3 / Potsdam(-6) / COCO-Stuff-15 accuracy.
PAPER_TABLE_2 = {"IIC": (72.3, 45.4, 27.9), "AC": (72.9, 49.3, 30.8), "InfoSeg": (73.8, 57.3, 38.8),
                 "SAN": (80.3, 60.5, 55.7)}
# Table 3: COCO-Stuff-27 / Cityscapes accuracy (against pretrained methods).
PAPER_TABLE_3 = {"PiCIE (RN50)": (48.1, None), "PiCIE + H.": (50.0, 65.5), "SAN": (52.0, 51.0)}
# Table 4: backbone ablation, COCO-Stuff-3 accuracy.
PAPER_TABLE_4 = {"encoder ResNet18": 73.5, "encoder UNet": 71.9, "encoder 3x3 Conv": 80.3, "decoder ResNet18": 77.8,
                 "decoder UNet": 78.5, "generator ViT-4": 79.9, "generator ViT-6": 80.3}
# Table 5: (image reconstruction, batch-wise, token matcher) -> COCO-Stuff-3 accuracy.
PAPER_TABLE_5 = {"without reconstruction": 34.2, "without batch-wise and token matcher": 74.4,
                 "per-image semantics (without batch-wise)": 79.2, "without token matcher": 76.7, "full SAN": 80.3}

__all__ = ["PAPER_SOURCE", "PAPER_SETTING", "PAPER_TABLE_2", "PAPER_TABLE_3", "PAPER_TABLE_4", "PAPER_TABLE_5"]
