"""minitransformer.io"""
