"""Sample building shared by training, evaluation and the vehicle runtime.

Only numpy, shapely and OpenCV here: the exported runtime imports this package, so it must
never import torch or lightning.
"""
