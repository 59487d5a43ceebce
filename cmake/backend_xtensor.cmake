# The xtensor backend (adalora::xtensor): added when xtensor is found.
