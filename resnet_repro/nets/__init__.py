"""The networks: the residual units of both papers (units) and the ResNets built from them
(models), with torchvision's names for every weight."""
