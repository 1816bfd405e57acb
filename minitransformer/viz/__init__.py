"""minitransformer.viz"""
