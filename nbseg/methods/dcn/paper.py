"""DCN's reported numbers, as data (Li et al. 2022, arXiv 2210.05944 v1, from the paper's text: PASCAL VOC 2012 val,
DINO ViT-S/8). Every table that shows them labels them as the paper's."""

PAPER_SOURCE = "paper (Li et al. 2022), as reported"
PAPER_SETTING = {"encoder": "DINO ViT-S/8", "dataset": "PASCAL VOC 2012 val"}
PAPER_DCN_ROW = "DCN + k-means (the paper's \"Ours\")"
# Table 1 (mIoU %, mean and std over 10 k-means runs where given). Only the DCN row states its encoder (Sec. 4.1.2);
# the paper lists DSM twice without saying what differs.
PAPER_TABLE_1 = [("MoCo [13]", 4.3, None), ("SwAV [4]", 4.4, None), ("IIC [16]", 9.8, None),
                 ("MaskContrast [37]", 35.0, None), ("DSM [26] (first row)", 30.8, 2.7),
                 ("DSM [26] (second row)", 37.2, 3.8), ("Leopart [47]", 41.7, None), ("MaskDistill [38]", 42.0, None),
                 ("MaskDistill w/ self-training [38]", 45.8, None), (PAPER_DCN_ROW, 47.1, 2.4)]
# Table 2: weighted k-NN region classification, k -> (mIoU %, pixel accuracy %).
PAPER_TABLE_2 = {1: (55.06, 88.17), 3: (57.12, 89.69), 5: (57.53, 89.93), 10: (55.91, 89.69)}

__all__ = ["PAPER_SOURCE", "PAPER_SETTING", "PAPER_DCN_ROW", "PAPER_TABLE_1", "PAPER_TABLE_2"]
