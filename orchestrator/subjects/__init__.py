"""The benchmark subjects: building the functions of functions/, packaging them for AWS Lambda and
deploying them."""
