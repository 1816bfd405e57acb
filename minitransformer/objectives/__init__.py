"""minitransformer.objectives"""
