"""The labels.json of an export (`spade_tf_client.contract.LabelsJson`), built from a run's config."""

from spade_tf_client.contract import LabelsJson, min_size

from spade_tf.data.classes import class_names, palette
from spade_tf.models.generator import num_upsamplings


def size_multiple(cfg) -> int:
    """Heights and widths the generator takes are multiples of this."""
    model = cfg.model
    if model.netG == "pix2pixhd":
        return 2**model.resnet_n_downsample
    return 2 ** num_upsamplings(model.num_upsampling_layers)


def labels_json(cfg, signatures=()) -> LabelsJson:
    """Class names, palette and size rules of the model `cfg` describes (docs/EXPORT_CONTRACT.md)."""
    data, model = cfg.data, cfg.model
    multiple = size_multiple(cfg)
    return LabelsJson(
        model_name=cfg.export.model_name,
        class_names=tuple(class_names(data.dataset_mode, data.label_nc, data.class_names or None)),
        palette=tuple(tuple(int(c) for c in colour) for colour in palette(data.dataset_mode, data.label_nc)),
        label_nc=data.label_nc,
        contain_dontcare_label=data.contain_dontcare_label,
        use_instance=not data.no_instance,
        use_vae=model.use_vae,
        z_dim=model.z_dim,
        image_size=tuple(cfg.image_size),
        size_multiple=multiple,
        min_size=min_size(multiple, model.resnet_kernel_size if model.netG == "pix2pixhd" else None),
        aspect_ratio=data.aspect_ratio,
        signatures=tuple(sorted(signatures)),
    )
