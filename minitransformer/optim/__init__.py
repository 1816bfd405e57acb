"""minitransformer.optim"""
