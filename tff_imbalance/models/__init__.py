"""Keras model builders that expose a feature extractor and a classifier.

Every model maps images [B, H, W, C_in] to logits [B, num_classes]; its last
layer is a `Dense` named `builders.CLASSIFIER_LAYER`, so algorithms that treat
features and classifier separately (RedGrape, BalanceFL, CReFF) can split any
model with `builders.feature_extractor` and `builders.classifier_layer`. A
user's own Keras model enters through `spec.ModelSpec.from_keras(model_fn,
classifier_layer=NAME)`: a no-argument factory whose last layer is a `Dense`
without activation, named `classifier` unless `classifier_layer` says other.
"""
