"""minitransformer.models"""
