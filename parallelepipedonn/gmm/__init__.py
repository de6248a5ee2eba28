"""Certified classifiers on a latent Gaussian mixture.

An encoder maps inputs to latents; a Gaussian mixture with a shared covariance is fitted on
the training latents (:mod:`.mixture`); its Bayes rule is one affine layer on top of the
encoder, so the classifier is an ordinary ONNX ReLU network that every oracle reads
(:mod:`.model`). Its certificates have closed forms (:mod:`.radii`, :mod:`.lipschitz`):
latent radii, an input-space L2 radius from a proven Lipschitz bound, and for a linear
encoder exact input radii. :mod:`.certify` assembles them with the default search's box;
:mod:`.diagnostics` estimates how far the latents are from the mixture. Encoders:
:mod:`.encoders`; fitting and writing: :mod:`.fit`.
"""
