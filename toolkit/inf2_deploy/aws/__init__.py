"""Amazon SageMaker and S3: sessions and errors, uploads, the LMI image, endpoints, deploys, IAM policies.

Laptop side; every AWS call the toolkit makes goes through this package.
"""
