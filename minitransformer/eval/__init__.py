"""minitransformer.eval"""
