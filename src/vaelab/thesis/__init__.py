"""The thesis's chapter-1 building blocks, each citing its definition: activations and dense
networks (:mod:`.nn`), image operations (:mod:`.images`), losses, empirical risk and
information measures (:mod:`.losses`), GD/SGD/Adam/AMSGrad (:mod:`.optim`) and Reddi et
al.'s counter-example (:mod:`.reddi`)."""
