"""SageMaker: the training contract inside the container, and jobs launched from a laptop.

``contract`` and ``model_dir`` run inside the training container (``sagemaker_entry/train.py``);
``jobs`` and ``cli`` drive SageMaker from outside through the SageMaker Python SDK v3.
"""
