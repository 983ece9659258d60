"""`preprocessor_config.json`s that several families' hub checkpoints share."""

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
# The preprocessor_config.json of microsoft/resnet-* and of facebook/convnext-*-224* (ConvNextFeatureExtractor(size=224)
# in transformers' convert_convnext_to_pytorch.py; size 384 for the -384 ones).
RESNET_PREPROCESSING = {"feature_extractor_type": "ConvNextFeatureExtractor", "crop_pct": 0.875, "do_normalize": True,
                        "do_resize": True, "resample": 3, "size": 224, **IMAGENET}
# facebook/dinov3-vit*-pretrain-lvd1689m and facebook/dinov3-convnext-*-pretrain-lvd1689m:
# DINOv3ViTImageProcessorFast(size={"height": 224, "width": 224}, resample=2 (bilinear)), as convert_dinov3_vit_to_hf.py
# and convert_dinov3_convnext_to_hf.py save it (with transformers 4.56, which writes the unset options as null).
DINOV3_PREPROCESSING = {"image_processor_type": "DINOv3ViTImageProcessorFast", "crop_size": None,
                        "data_format": "channels_first", "default_to_square": True, "device": None,
                        "disable_grouping": None, "do_center_crop": None, "do_convert_rgb": None, "do_normalize": True,
                        "do_rescale": True, "do_resize": True, "input_data_format": None, "resample": 2,
                        "rescale_factor": 1 / 255, "return_tensors": None, "size": {"height": 224, "width": 224},
                        **IMAGENET}
# The detectors' RTDetrImageProcessor() (640 x 640 bilinear, rescale to [0, 1], no normalisation, no padding), as
# transformers' convert_rt_detr_original_pytorch_checkpoint_to_hf.py and convert_d_fine_..._to_hf.py save it for
# PekingU/rtdetr_*, PekingU/rtdetr_v2_* and ustc-community/dfine-*.
RT_DETR_PREPROCESSING = {"image_processor_type": "RTDetrImageProcessor", "do_convert_annotations": True,
                         "do_normalize": False, "do_pad": False, "do_rescale": True, "do_resize": True,
                         "format": "coco_detection", "resample": 2, "rescale_factor": 1 / 255,
                         "size": {"height": 640, "width": 640}, **IMAGENET}
# DETR-style detectors: their processor's defaults (shortest edge 800, longest 1333, bilinear, ImageNet
# normalisation, padding with a pixel mask), as transformers' DETR conversion scripts build it (`format` aside).
DETR_PREPROCESSING = {"image_processor_type": "DetrImageProcessor", "do_normalize": True, "do_pad": True,
                      "do_rescale": True, "do_resize": True, "format": "coco_detection", "resample": 2,
                      "rescale_factor": 1 / 255, "size": {"shortest_edge": 800, "longest_edge": 1333}, **IMAGENET}
# SegformerImageProcessor()'s defaults (512 x 512 bilinear, ImageNet normalisation), as the UperNet conversion
# scripts save them for openmmlab/upernet-*.
SEGFORMER_DEFAULTS = {"image_processor_type": "SegformerImageProcessor", "do_normalize": True,
                      "do_reduce_labels": False, "do_rescale": True, "do_resize": True, "resample": 2,
                      "rescale_factor": 1 / 255, "size": {"height": 512, "width": 512}, **IMAGENET}
